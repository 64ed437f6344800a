"""The ``udp4`` and ``udp6`` transports: brokerless, one message per UDP datagram.

Wire-compatible with the JavaScript original: every datagram holds exactly one message's JSON
(``{"id","headers","payload"}``), from whichever sender; what is sent is ``msg.to_bytes()``
and nothing else. UDP promises neither order nor delivery, so both are declared in the
capabilities, as is the largest payload one datagram carries: 65507 bytes over IPv4
(65535 - 20 IP header - 8 UDP header) and 65527 over IPv6 (65535 payload length - 8 UDP
header, no jumbograms). Both were checked on Linux loopback (MTU 65536): exactly those sizes
are delivered and one byte more fails with ``EMSGSIZE``.

Servers bind loopback unless given another ``address``; each reply goes back with ``sendto``
to the datagram's source address. Clients use a *connected* datagram socket: sending is a bare
``send`` (cheaper than ``sendto``), the kernel only hands the client datagrams from the server
it connected to, and an ICMP "port unreachable" comes back as an error. Such an error fails the
client's waiting requests at once with :class:`~distro_core.ConnectionError` (instead of letting
them run into their time-out); the client stays usable, since the server may come (back) up.

Sends go straight to the socket; only when the kernel's buffer is full does asyncio's transport
queue the datagram (and the client waits for that queue to drain past its high-water mark).
Every ``OSError`` of a send is raised as a :class:`~distro_core.TransportError`. Reads: asyncio
hands over one datagram per turn of the loop; the rest of a burst is read straight from the
socket (at most ``_BURST`` more, and not once the server pauses reading for back-pressure).

Back-pressure: a paused server's socket is not read, so datagrams wait in the kernel's receive
buffer (dropped by the kernel when it is full). uvloop's datagram transport cannot pause
reading: on it the listener holds what arrives while paused, in order, up to
``receive_buffer`` bytes (past that each datagram is dropped and counted ``receive_buffer``,
as the kernel would have dropped it), and hands it over first when reading resumes.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import ipaddress
import socket
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar, cast

from .._exceptions import ConnectionError, TransportError
from .._message import Message
from ..transport import (
    API_VERSION,
    Capabilities,
    ClientReceiver,
    Connection,
    Listener,
    Options,
    Peer,
    Receiver,
    Transport,
    map_error,
)

__all__ = ["UDP4Transport", "UDP6Transport", "UDPTransport"]

IPV4_MAX_DATAGRAM = 65507
"""65535 (IPv4 total length) - 20 (IP header) - 8 (UDP header)."""
IPV6_MAX_DATAGRAM = 65527
"""65535 (IPv6 payload length) - 8 (UDP header)."""

DEFAULT_RECEIVE_BUFFER = 1024 * 1024
"""The receive buffer udp sockets ask for (Linux's default of 208 KiB lost 17% of replies to
50 clients x 200 requests over udp6)."""

_PEER_CACHE = 1024
"""Source addresses whose Peer is kept, so a busy sender costs no allocation per datagram."""
_BURST = 63
"""Datagrams read straight from the socket after the one asyncio hands over, per wake-up."""
_READ_SIZE = 65536
"""Larger than any UDP payload (65535 - 8 at most), so no datagram is ever cut short."""
_CLOSE_TIMEOUT = 1.0
_UNREACHABLE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)
_NO_OPTIONS: Mapping[str, Any] = {}
_U = TypeVar("_U", bound="UDPTransport")


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _send_error(name: str, exc: OSError, size: int, host: str, port: int) -> TransportError:
    """The distro error for an ``OSError`` raised while sending ``size`` bytes."""
    error = map_error(exc, f"{name} could not send {size} bytes to {_where(host, port)}")
    if exc.errno == errno.EMSGSIZE:
        error.args = (f"{error} (larger than one datagram can carry)",)
    return error


class _DatagramTransport(Protocol):
    """What the loops' datagram transports offer (selector, proactor, uvloop); asyncio's own
    ``DatagramTransport`` class declares only part of it. ``pause_reading`` and
    ``resume_reading`` are not here: asyncio's have them, uvloop's do not."""

    def sendto(self, data: bytes, addr: Any = None) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class _Endpoint(asyncio.DatagramProtocol):
    """What listeners and connections share: the socket, its asyncio transport, sending."""

    def __init__(self, name: str, sock: socket.socket) -> None:
        self._name = name
        self._sock = sock
        self._transport: _DatagramTransport | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("_DatagramTransport", transport)
        if isinstance(getattr(transport, "max_size", None), int):
            # The selector loop's transport reads each datagram into a fresh 256 KiB buffer and
            # shrinks it: about 13 us per datagram against 1.5 us with a 64 KiB one, which still
            # holds any UDP payload whole.
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _sendto(self, data: bytes, addr: Any, host: str, port: int) -> None:
        """Send one datagram to ``addr`` (None on a connected socket) without blocking.

        :raises TransportError: the socket refused it (``ConnectionError``: unreachable).
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionError(f"{self._name} socket to {_where(host, port)} is closed")
        if transport.get_write_buffer_size():
            # Datagrams already wait in asyncio's queue; this one goes behind them.
            transport.sendto(data, addr)
            return
        sock = self._sock
        try:
            if addr is None:
                try:
                    sock.send(data)
                except builtins.ConnectionError:
                    # A connected socket reports an earlier datagram's ICMP refusal on the next
                    # call, once; this datagram deserves its own chance.
                    sock.send(data)
            else:
                sock.sendto(data, addr)
        except BlockingIOError:
            transport.sendto(data, addr)  # queued; sent when the socket is writable again
        except OSError as exc:
            raise _send_error(self._name, exc, len(data), host, port) from exc

    async def _aclose(self) -> None:
        transport = self._transport
        if transport is None:
            self._sock.close()
            return
        transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), _CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            transport.abort()  # datagrams still queued after the bound are dropped


class _UDPPeer(Peer):
    """A datagram's sender; replies go back to its source address."""

    __slots__ = ("_addr", "_endpoint", "_port")

    def __init__(self, endpoint: _UDPListener, addr: Any) -> None:
        super().__init__(addr[0])
        self._endpoint = endpoint
        self._addr = addr
        self._port: int = addr[1]

    def send(self, data: bytes, reply_to: str) -> None:
        self._endpoint._sendto(data, self._addr, self.host or "?", self._port)


class _UDPListener(_Endpoint, Listener):
    """A bound datagram socket handing every datagram to the server."""

    def __init__(self, name: str, sock: socket.socket, receiver: Receiver, hold_limit: int) -> None:
        super().__init__(name, sock)
        self._receiver = receiver
        self._frame_received = receiver.frame_received
        self._peers: dict[Any, _UDPPeer] = {}
        self._paused = False
        # Held while paused on a loop that cannot pause a datagram transport (uvloop).
        self._held: deque[tuple[bytes, Any]] = deque()
        self._held_bytes = 0
        self._hold_limit = hold_limit
        host, port = sock.getsockname()[:2]
        self.address = (host, port)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._paused:  # only on a loop that could not pause reading (uvloop)
            self._hold(data, addr)
            return
        peers = self._peers
        deliver = self._frame_received
        peer = peers.get(addr)
        if peer is None:
            peer = self._new_peer(addr)
        deliver(data, peer)
        # asyncio reads one datagram per turn of the loop (a poll and a callback each); a burst
        # is drained here instead, bounded so other work still gets its turn.
        recvfrom = self._sock.recvfrom
        for _ in range(_BURST):
            if self._paused:  # the server asked for back-pressure while taking the last one
                return
            try:
                data, addr = recvfrom(_READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.error_received(exc)
                return
            peer = peers.get(addr)
            if peer is None:
                peer = self._new_peer(addr)
            deliver(data, peer)

    def _new_peer(self, addr: Any) -> _UDPPeer:
        peers = self._peers
        if len(peers) >= _PEER_CACHE:
            del peers[next(iter(peers))]
        peer = peers[addr] = _UDPPeer(self, addr)
        return peer

    def error_received(self, exc: Exception) -> None:
        # A reply asyncio had queued could not be sent, or the socket reported an error: the
        # server goes on, and the failure is counted and logged like a dropped frame.
        self._receiver.frame_dropped("socket_error", f"{self._name} {_where(*self.address)}: {exc}")

    def pause_reading(self) -> None:
        self._paused = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            pause = getattr(transport, "pause_reading", None)
            if pause is not None:  # uvloop's has none: datagram_received holds instead
                pause()

    def resume_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._paused = False
            resume = getattr(transport, "resume_reading", None)
            if resume is not None:
                resume()
            else:
                self._release()

    def _hold(self, data: bytes, addr: Any) -> None:
        """Keep a datagram that came while paused, within ``receive_buffer`` bytes."""
        if self._held_bytes + len(data) > self._hold_limit:
            self._receiver.frame_dropped(
                "receive_buffer",
                f"{self._name} {_where(*self.address)}: paused, and {self._held_bytes} bytes "
                "already wait (receive_buffer); a datagram dropped",
            )
            return
        self._held.append((data, addr))
        self._held_bytes += len(data)

    def _release(self) -> None:
        """Hand over the held datagrams in order, until the server pauses again."""
        held = self._held
        while held and not self._paused:
            data, addr = held.popleft()
            self._held_bytes -= len(data)
            peer = self._peers.get(addr)
            if peer is None:
                peer = self._new_peer(addr)
            self._frame_received(data, peer)

    async def aclose(self) -> None:
        self._paused = True
        self._peers.clear()
        self._held.clear()
        self._held_bytes = 0
        await self._aclose()


class _UDPConnection(_Endpoint, Connection):
    """A datagram socket connected to one server; replies come back on it."""

    def __init__(
        self, name: str, sock: socket.socket, receiver: ClientReceiver, host: str, port: int
    ) -> None:
        super().__init__(name, sock)
        self._receiver = receiver
        self._host = host
        self._port = port
        self._closing = False
        local = sock.getsockname()
        self.reply_to = f"{name}:{_where(local[0], local[1])}"

    def datagram_received(self, data: bytes, addr: Any) -> None:
        deliver = self._receiver.frame_received
        deliver(data)
        # Replies to concurrent requests come in bursts: drain them, as the listener does.
        recv = self._sock.recv
        for _ in range(_BURST):
            if self._closing:
                return
            try:
                data = recv(_READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.error_received(exc)
                return
            deliver(data)

    def error_received(self, exc: Exception) -> None:
        # On a connected socket this is mostly ICMP news of an earlier datagram (port
        # unreachable): nothing answers there now, so waiting requests fail at once rather than
        # time out. Any other error lost a datagram we cannot name, so they fail as well.
        where = _where(self._host, self._port)
        if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
            text = f"{self._name}: nothing listens at {where} ({exc.strerror or exc})"
        else:
            text = f"{self._name}: a datagram to {where} was lost: {exc}"
        error = ConnectionError(text)
        error.__cause__ = exc
        # Counted and logged by the client (stats.unheard): at least one datagram was lost.
        # The kernel keeps one pending error per socket, so a burst refused at once counts as
        # one, and a datagram lost on the way is not reported at all (use confirm=True).
        self._receiver.unheard(text)
        self._receiver.connection_lost(error)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closing:
            self._receiver.connection_lost(exc)

    def send_nowait(self, data: bytes, message: Message) -> bool:
        if self._closing or self._writable is not None:
            return False  # send() raises, or waits for the socket
        self._sendto(data, None, self._host, self._port)
        return True

    async def send(self, data: bytes, message: Message) -> None:
        if self._closing:
            raise ConnectionError(f"{self._name} client of {_where(self._host, self._port)} closed")
        self._sendto(data, None, self._host, self._port)
        if self._writable is not None:
            await asyncio.shield(self._writable)

    async def aclose(self) -> None:
        self._closing = True
        await self._aclose()


class UDPTransport(Transport):
    """The common part of ``udp4`` and ``udp6``; use one of those.

    Options: ``address``, where a server binds or the server a client sends to (loopback by
    default; a server listens on every interface only when given ``"0.0.0.0"`` or ``"::"``),
    ``port`` (a server's 0 picks a free one, see ``server.address``; a client needs the
    server's, 1..65535), and ``receive_buffer``, the socket's receive buffer in bytes
    (:data:`DEFAULT_RECEIVE_BUFFER` by default; the kernel caps it at ``net.core.rmem_max``).
    Datagrams that arrive while the buffer is full are dropped by the kernel, unseen by distro:
    a burst of replies to many outstanding requests needs room (a lost reply surfaces as the
    request's ``RequestTimeout``, a lost one-way message nowhere: udp is unreliable).
    ``reuse_port=True`` (servers; Linux and BSDs) lets several servers, in one process or
    several, bind one port: the kernel spreads datagrams between them by source address.

    :cvar family: the socket address family.
    :cvar loopback: the default address.
    """

    api_version = API_VERSION
    family: ClassVar[socket.AddressFamily]
    loopback: ClassVar[str]

    def __init__(
        self,
        address: str,
        port: int,
        receive_buffer: int = 0,
        reuse_port: bool = False,
        *,
        options: Mapping[str, Any] = _NO_OPTIONS,
    ) -> None:
        self.reuse_port = reuse_port
        self.address = address
        self.port = port
        self.receive_buffer = receive_buffer or DEFAULT_RECEIVE_BUFFER
        self.options = options

    def _socket(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        except OSError:  # pragma: no cover - a platform that refuses: keep its default
            pass
        return sock

    @classmethod
    def from_options(cls: type[_U], options: Mapping[str, Any]) -> _U:
        """Read ``address`` and ``port`` (see the class docstring)."""
        opts = Options(cls.name, options)
        address = opts.get("address", cls.loopback)
        if type(address) is not str or not address or address != address.strip():
            raise ValueError(
                f"{cls.name} address must be a host name or IP address, got {address!r} "
                f"(a server listens on all interfaces only when given "
                f"{'0.0.0.0' if cls.family == socket.AF_INET else '::'!r})"
            )
        try:
            literal = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            pass  # a host name, resolved in this family when used
        else:
            if (literal.version == 4) != (cls.family == socket.AF_INET):
                other = "udp6" if literal.version == 6 else "udp4"
                raise ValueError(
                    f"{cls.name} needs an IPv{6 if literal.version == 4 else 4} address, "
                    f"got {address!r}; use the {other!r} transport for it"
                )
        port = opts.port()
        buffer = opts.integer("receive_buffer", DEFAULT_RECEIVE_BUFFER, minimum=4096)
        reuse_port = opts.flag("reuse_port", False)
        if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError(f"{cls.name} option 'reuse_port': this platform has no SO_REUSEPORT")
        return cls(address, port, buffer, reuse_port, options=opts.finish())

    async def _resolve(self, host: str, port: int, passive: bool) -> Any:
        """The socket address of ``host``/``port`` in this transport's family."""
        flags = socket.AI_PASSIVE if passive else 0
        try:
            # Literal addresses resolve at once, without a trip to the executor.
            infos = socket.getaddrinfo(
                host, port, self.family, socket.SOCK_DGRAM, 0, flags | socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=self.family, type=socket.SOCK_DGRAM, flags=flags
            )
        return infos[0][4]

    async def listen(self, receiver: Receiver) -> Listener:
        """Bind a datagram socket and deliver each datagram to ``receiver``.

        :raises AddressInUse: the address and port are taken.
        :raises TransportError: the address cannot be resolved or bound.
        """
        where = _where(self.address, self.port)
        try:
            sockaddr = await self._resolve(self.address, self.port, passive=True)
        except OSError as exc:
            raise map_error(exc, f"{self.name} cannot resolve {self.address!r}") from exc
        sock = self._socket()
        try:
            # No SO_REUSEADDR: on UDP it would let a second server share the port silently.
            # SO_REUSEPORT only when asked: then the kernel spreads datagrams between them.
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setblocking(False)
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise map_error(exc, f"{self.name} cannot listen on {where}") from exc
        listener = _UDPListener(self.name, sock, receiver, self.receive_buffer)
        await self._start(sock, listener)
        return listener

    async def connect(
        self, receiver: ClientReceiver, target: tuple[str, int] | None = None
    ) -> Connection:
        """Open a datagram socket connected to the server (or to ``target``).

        :raises ValueError: no server port was given.
        :raises ConnectionError: the address cannot be resolved or reached.
        """
        host, port = (self.address, self.port) if target is None else target
        if type(port) is not int or not 1 <= port <= 65535:
            raise ValueError(f"a {self.name} client needs the server's port 1..65535, got {port!r}")
        where = _where(host, port)
        sock: socket.socket | None = None
        try:
            sockaddr = await self._resolve(host, port, passive=False)
            sock = self._socket()
            sock.setblocking(False)
            sock.connect(sockaddr)  # no packet is sent: UDP only fixes the peer address
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise ConnectionError(str(map_error(exc, f"{self.name} cannot reach {where}"))) from exc
        connection = _UDPConnection(self.name, sock, receiver, host, port)
        await self._start(sock, connection)
        return connection

    async def _start(self, sock: socket.socket, endpoint: _Endpoint) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
        except OSError as exc:
            sock.close()
            raise map_error(exc, f"{self.name}: cannot start the socket") from exc


class UDP4Transport(UDPTransport):
    """``udp4``: one message per UDP datagram over IPv4, at most 65507 bytes encoded."""

    name = "udp4"
    family = socket.AF_INET
    loopback = "127.0.0.1"
    capabilities = Capabilities(ordered=False, reliable=False, max_message_size=IPV4_MAX_DATAGRAM)


class UDP6Transport(UDPTransport):
    """``udp6``: one message per UDP datagram over IPv6, at most 65527 bytes encoded."""

    name = "udp6"
    family = socket.AF_INET6
    loopback = "::1"
    capabilities = Capabilities(ordered=False, reliable=False, max_message_size=IPV6_MAX_DATAGRAM)
