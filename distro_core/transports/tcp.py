"""The ``tcp`` transport: persistent connections carrying newline-delimited JSON frames.

A client keeps one connection to its server and sends every message on it, in order; replies
come back on the same connection. Frames are split by the pure
:class:`~distro_core.framing.FrameDecoder`; this module is the asyncio driver around it
(``asyncio.Protocol``, not streams, to keep a read to a split and a loop).

What a server does with a peer that misbehaves: a frame longer than ``max_frame_size`` (or that
many bytes with no newline) is counted as dropped ``too_large`` and the connection is aborted;
a frame cut off by the end of the stream is counted ``truncated``; anything else that is not a
message is the core's to count (``invalid``). The server serves other connections throughout.

Reconnection: when a client's connection is lost (the server closed or restarted), the core is
told at once (``connection_lost``, so pending requests fail with ``ConnectionError``) and the
next ``send`` opens a new connection, waiting at most ``connect_timeout``; if the server is not
back, that send raises :class:`~distro_core.ConnectionError` and a later one tries again.
"""

from __future__ import annotations

import asyncio
import errno
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from .._exceptions import AddressInUse, ConnectionError, MessageError, TransportError
from .._message import Message
from .._transport import (
    Capabilities,
    ClientReceiver,
    Connection,
    Listener,
    Peer,
    Receiver,
    Transport,
    check_options,
)
from ..framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameTooLarge, FramingError

__all__ = ["TcpTransport"]

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT = 5.0
CLOSE_GRACE = 1.0
"""Seconds a closing connection may take to flush its writes before it is aborted."""

_NL = b"\n"


def _where(host: object, port: object) -> str:
    host = str(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _TcpPeer(Peer):
    """The client at the other end of one server connection; one per connection."""

    __slots__ = ("_protocol",)

    def __init__(self, host: str | None, protocol: _ServerProtocol) -> None:
        super().__init__(host)
        self._protocol = protocol

    def send(self, data: bytes, reply_to: str) -> None:
        self._protocol.write_frame(data)


class _ServerProtocol(asyncio.Protocol):
    """One accepted connection: bytes in -> decoder -> frames to the core."""

    def __init__(self, listener: _TcpListener) -> None:
        self._listener = listener
        self._receiver = listener.receiver
        self._deliver = listener.receiver.frame_received
        self._decoder = FrameDecoder(listener.max_frame_size)
        self._limit = listener.max_frame_size
        self._transport: asyncio.Transport | None = None
        self._peer = _TcpPeer(None, self)
        self._where = "?"
        self._write_paused = False
        self._reading_paused = False
        self._held: deque[bytes] = deque()
        self.lost: asyncio.Future[None] = listener.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        if peername:
            self._peer.host = str(peername[0])
            self._where = _where(peername[0], peername[1])
        listener = self._listener
        if listener.closed:
            transport.abort()
            return
        listener.connections.add(self)
        if listener.paused:
            self.update_reading()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FramingError as exc:
            self._take(exc.frames)
            reason = "too_large" if isinstance(exc, FrameTooLarge) else "invalid"
            self._receiver.frame_dropped(reason, f"tcp peer {self._where}: {exc}; disconnected")
            if self._transport is not None:
                self._transport.abort()
            return
        self._take(frames)

    def _take(self, frames: list[bytes]) -> None:
        if self._reading_paused or self._held:
            self._held.extend(frames)
            return
        deliver = self._deliver
        peer = self._peer
        remaining = iter(frames)
        for frame in remaining:
            deliver(frame, peer)
            if self._reading_paused:
                # The core paused mid-chunk: keep the rest here rather than overfill its
                # backlog; they go first when reading resumes.
                self._held.extend(remaining)
                return

    def eof_received(self) -> bool | None:
        self._end_of_stream()
        return None  # close our side too: a half-closed peer gets no more replies

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_of_stream()
        self._transport = None
        if not self._held:  # else kept until the frames it holds are delivered on resume
            self._listener.connections.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def _end_of_stream(self) -> None:
        try:
            self._decoder.feed(b"")
        except FramingError as exc:
            self._receiver.frame_dropped("truncated", f"tcp peer {self._where}: {exc}")

    def pause_writing(self) -> None:
        # A peer that does not read its replies stops being read from: the write buffer
        # stays near the high-water mark instead of growing with every request it sends.
        self._write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.update_reading()

    def update_reading(self) -> None:
        """Pause or resume reading to match the listener's and this connection's state."""
        if self._write_paused or self._listener.paused:
            if not self._reading_paused:
                self._reading_paused = True
                if self._transport is not None:
                    self._transport.pause_reading()
            return
        if not self._reading_paused:
            return
        self._reading_paused = False
        held = self._held
        while held:
            self._deliver(held.popleft(), self._peer)
            if self._reading_paused:
                return  # the core paused again while taking them
        if self._transport is None:
            self._listener.connections.discard(self)
        else:
            self._transport.resume_reading()

    def write_frame(self, data: bytes) -> None:
        """Write one reply frame; the core's :meth:`Peer.send`."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionError(f"tcp: the connection from {self._where} is gone")
        if len(data) > self._limit:
            raise TransportError(
                f"tcp: a reply of {len(data)} bytes to {self._where} exceeds "
                f"max_frame_size of {self._limit} bytes"
            )
        if _NL in data:
            raise TransportError(f"tcp: a reply to {self._where} holds a raw newline")
        transport.write(data + _NL)

    def close(self) -> None:
        """Close after flushing what is queued (bounded by the listener)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close now, dropping what is queued."""
        if self._transport is not None:
            self._transport.abort()


class _TcpListener(Listener):
    def __init__(self, receiver: Receiver, max_frame_size: int) -> None:
        self.receiver = receiver
        self.max_frame_size = max_frame_size
        self.loop = asyncio.get_running_loop()
        self.connections: set[_ServerProtocol] = set()
        self.paused = False
        self.closed = False
        self._server: asyncio.AbstractServer | None = None

    async def bind(self, host: str, port: int) -> None:
        try:
            server = await self.loop.create_server(lambda: _ServerProtocol(self), host, port)
        except OSError as exc:
            where = _where(host, port)
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"tcp: cannot listen on {where}: address {host} port {port} is already in use"
                ) from exc
            raise TransportError(f"tcp: cannot listen on {where}: {exc}") from exc
        self._server = server
        name = server.sockets[0].getsockname()
        self.address = (str(name[0]), int(name[1]))

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            for protocol in self.connections:
                protocol.update_reading()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            for protocol in list(self.connections):
                protocol.update_reading()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
        protocols = list(self.connections)
        for protocol in protocols:
            protocol.close()
        waiting = [p.lost for p in protocols if not p.lost.done()]
        if waiting:
            # close() waits for queued writes to flush; a peer that stalls gets aborted.
            _, stuck = await asyncio.wait(waiting, timeout=CLOSE_GRACE)
            if stuck:
                for protocol in protocols:
                    protocol.abort()
                await asyncio.wait(stuck, timeout=CLOSE_GRACE)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_GRACE)
            except asyncio.TimeoutError:
                pass


class _ClientProtocol(asyncio.Protocol):
    """A client's connection: frames out, reply frames in, write back-pressure."""

    transport: asyncio.Transport

    def __init__(self, connection: _TcpConnection) -> None:
        self._connection = connection
        self._deliver = connection.receiver.frame_received
        self._decoder = FrameDecoder(connection.max_frame_size)
        self._drain_waiters: deque[asyncio.Future[None]] = deque()
        self._error: BaseException | None = None
        self.paused = False
        self.notified = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FramingError as exc:
            for frame in exc.frames:
                self._deliver(frame)
            self._error = ConnectionError(
                f"tcp: server {self._connection.where} sent a bad stream: {exc}; disconnected"
            )
            self.transport.abort()
            return
        deliver = self._deliver
        for frame in frames:
            deliver(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        error: BaseException
        if self._error is not None:
            error = self._error
        elif exc is not None:
            error = ConnectionError(f"tcp: lost the connection to {self._connection.where}: {exc}")
            error.__cause__ = exc
        else:
            error = ConnectionError(f"tcp: server {self._connection.where} closed the connection")
        self._error = error
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)
        self._connection.lost(self, error)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the write buffer is below its low-water mark again.

        :raises ConnectionError: the connection was lost meanwhile.
        """
        if self._error is not None:
            raise self._error
        if not self.paused:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter


class _TcpConnection(Connection):
    reply_to = "tcp"  # replies simply come back on the connection the request went out on

    def __init__(self, receiver: ClientReceiver, host: str, port: int, options: TcpTransport):
        self.receiver = receiver
        self.max_frame_size = options.max_frame_size
        self.where = _where(host, port)
        self._host = host
        self._port = port
        self._timeout = options.connect_timeout
        self._protocol: _ClientProtocol | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def open(self) -> _ClientProtocol:
        """Connect, bounded by ``connect_timeout``.

        :raises ConnectionError: refused, unreachable or not within the time-out.
        """
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _ClientProtocol(self), self._host, self._port),
                self._timeout,
            )
        except asyncio.TimeoutError as exc:
            raise ConnectionError(
                f"tcp: no connection to {self.where} within {self._timeout:g}s"
            ) from exc
        except OSError as exc:
            raise ConnectionError(f"tcp: cannot connect to {self.where}: {exc}") from exc
        if self._closed:
            protocol.transport.abort()
            raise ConnectionError(f"tcp: the connection to {self.where} is closed")
        self._protocol = protocol
        return protocol

    async def send(self, data: bytes, message: Message) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport.is_closing():
            protocol = await self._reconnect(protocol)
        if _NL in data:
            raise MessageError(f"message {message.id} holds a raw newline; it cannot be framed")
        # One write of a joined copy: for frames of a few hundred bytes the copy is cheaper than
        # a second write() call, and it is one send() system call instead of two.
        protocol.transport.write(data + _NL)
        if protocol.paused:
            await protocol.drain()

    async def _reconnect(self, old: _ClientProtocol | None) -> _ClientProtocol:
        if self._closed:
            raise ConnectionError(f"tcp: the connection to {self.where} is closed")
        if old is not None:
            # Closing but not yet reported: report now, before anything goes out on a new
            # connection, so its requests are not failed by the old connection's news.
            self.lost(old, ConnectionError(f"tcp: the connection to {self.where} is closing"))
        async with self._lock:
            if self._protocol is not None and not self._protocol.transport.is_closing():
                return self._protocol
            return await self.open()

    def lost(self, protocol: _ClientProtocol, error: BaseException) -> None:
        """One connection is gone: tell the core once, and reconnect on the next send."""
        if protocol.notified:
            return
        protocol.notified = True
        if self._protocol is protocol:
            self._protocol = None
        if not self._closed:
            self.receiver.connection_lost(error)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        protocol, self._protocol = self._protocol, None
        if protocol is None or protocol.lost.done():
            return
        protocol.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(protocol.lost), CLOSE_GRACE)
        except asyncio.TimeoutError:
            protocol.transport.abort()


class TcpTransport(Transport):
    """Persistent TCP connections carrying newline-delimited JSON.

    Options:

    * ``address``: the host to listen on or connect to; ``"127.0.0.1"`` by default (loopback:
      a server is reachable from other machines only when given ``"0.0.0.0"``, ``"::"`` or a
      public address). IPv6 addresses such as ``"::1"`` work.
    * ``port``: 0 (the default) makes a server pick a free port (see ``server.address``); a
      client names its server's.
    * ``max_frame_size``: the longest frame read or written, in bytes (1 MiB by default). A
      peer sending more is disconnected; the client refuses larger messages with
      ``MessageTooLarge`` before sending.
    * ``connect_timeout``: seconds a client waits for a connection (5 by default).
    """

    name = "tcp"
    capabilities = Capabilities(max_message_size=DEFAULT_MAX_FRAME_SIZE)

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_options(self.name, options, {"address", "port", "max_frame_size", "connect_timeout"})
        super().__init__(options)
        address = options.get("address", DEFAULT_ADDRESS)
        if not isinstance(address, str) or not address:
            raise ValueError(
                f"address must be a non-empty host name or IP address, got {address!r}"
            )
        port = options.get("port", 0)
        if type(port) is not int or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0..65535, got {port!r}")
        size = options.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        if type(size) is not int or size < 1:
            raise ValueError(f"max_frame_size must be a positive integer, got {size!r}")
        timeout = options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise ValueError(f"connect_timeout must be a positive number, got {timeout!r}")
        self.address = address
        self.port = port
        self.max_frame_size = size
        self.connect_timeout = float(timeout)
        if size != DEFAULT_MAX_FRAME_SIZE:
            # The core reads the limit from the instance, so a client checks sizes against the
            # limit it was given; the class attribute describes the default.
            vars(self)["capabilities"] = Capabilities(max_message_size=size)

    async def listen(self, receiver: Receiver) -> Listener:
        listener = _TcpListener(receiver, self.max_frame_size)
        await listener.bind(self.address, self.port)
        return listener

    async def connect(
        self, receiver: ClientReceiver, target: tuple[str, int] | None = None
    ) -> Connection:
        host, port = (self.address, self.port) if target is None else target
        if target is None and port == 0:
            raise ValueError("a tcp client needs the server's port (the 'port' option)")
        if not isinstance(host, str) or type(port) is not int or not 0 < port <= 65535:
            raise ConnectionError(f"tcp: cannot connect to {host!r} port {port!r}")
        connection = _TcpConnection(receiver, host, port, self)
        await connection.open()
        return connection
