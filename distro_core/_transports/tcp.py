"""The ``tcp`` transport: persistent connections carrying newline-delimited JSON frames.

A client keeps one connection to its server and sends every message on it, in order; replies
come back on the same connection. Frames are split by the pure
:class:`~distro_core.framing.FrameDecoder`; this module and ``_tcp_server`` are the asyncio
driver around it (``asyncio.BufferedProtocol``, not streams: a read goes into a buffer allocated
once and costs one copy, one split and a loop).

What a server does with a peer that misbehaves: a frame longer than ``max_frame_size`` (or that
many bytes with no newline) is counted as dropped ``too_large`` and the connection is aborted;
a frame cut off by the end of the stream (or by the server's close) is counted ``truncated``;
a whole line that is not a message is the core's to count (``invalid``). The server serves
its other connections throughout, and the offending one too unless its stream was cut.

Reconnection: when a client's connection is lost (the server closed, restarted or reset it),
the core is told at once (``connection_lost``: pending requests fail with ``ConnectionError``)
and the next ``send`` opens a new connection, waiting at most ``connect_timeout``. If the server
is not back, that send raises :class:`~distro_core.ConnectionError`; a later one tries again.
A send that races the server's close (written before the client has read the close) is lost
as on any TCP socket; the connection is then reset and pending requests fail at once.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from .._exceptions import ConnectionError, MessageError
from .._message import Message
from ..framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FramingError
from ..transport import (
    API_VERSION,
    Capabilities,
    ClientReceiver,
    Connection,
    Listener,
    Options,
    Receiver,
    Transport,
    map_error,
)
from ._tcp_server import (
    CLOSE_GRACE,
    FrameWriter,
    ServerLimits,
    TcpListener,
    loop_read_buffer,
    where,
)
from ._tls import TlsListener, TlsSettings, read_tls, tls_failure

__all__ = ["TcpTransport"]

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_SEND_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024
DEFAULT_MAX_WRITE_BUFFER = 4 * 1024 * 1024

_NL = b"\n"


class _ClientProtocol(FrameWriter):
    """A client's connection: frames out, reply frames in, write back-pressure."""

    def __init__(self, connection: _TcpConnection) -> None:
        super().__init__(asyncio.get_running_loop())
        self._connection = connection
        self._deliver = connection.receiver.frame_received
        self._decoder = FrameDecoder(connection.max_frame_size)
        self._read_buffer = connection.read_buffer
        self._error: BaseException | None = None
        self.notified = False

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self._decoder.feed_from(self._read_buffer, nbytes)
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
        elif isinstance(exc, ssl.SSLError):
            error = ConnectionError(
                f"tcp: the TLS connection to {self._connection.where} failed: {tls_failure(exc)}"
            )
            error.__cause__ = exc
        elif exc is not None:
            error = ConnectionError(f"tcp: lost the connection to {self._connection.where}: {exc}")
            error.__cause__ = exc
        else:
            error = ConnectionError(f"tcp: server {self._connection.where} closed the connection")
        self._error = error
        self.batcher.lost(error)  # a sender waiting in drain() gets this error
        super().connection_lost(exc)
        self._connection.lost(self, error)


class _TcpConnection(Connection):
    reply_to = "tcp"  # replies simply come back on the connection the request went out on

    def __init__(
        self, receiver: ClientReceiver, host: str, port: int, options: TcpTransport
    ) -> None:
        self.receiver = receiver
        self.max_frame_size = options.max_frame_size
        # Shared with every tcp connection on this event loop (see loop_read_buffer): idle
        # clients cost no read memory (64 KiB each made 1,000 idle clients cost 64 MiB).
        self.read_buffer = loop_read_buffer(asyncio.get_running_loop())
        self.where = where(host, port)
        self._host = host
        self._port = port
        self._timeout = options.connect_timeout
        self._send_timeout = options.send_timeout
        # TLS: handed to create_connection (the handshake bounded like the connection).
        self._tls: dict[str, Any] = {}
        if options.tls is not None:
            self._tls = {
                "ssl": options.tls.client_context(),
                "server_hostname": options.tls.server_hostname or host,
                "ssl_handshake_timeout": options.connect_timeout,
            }
        self._protocol: _ClientProtocol | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def open(self, retry: bool = False) -> _ClientProtocol:
        """Connect, bounded by ``connect_timeout``.

        :param retry: while the server refuses (not listening yet: services start in any
            order), try again with a short back-off until ``connect_timeout`` has passed.
        :raises ConnectionError: refused, unreachable or not within the time-out.
        """
        if not retry:
            return await self._open_once(self._timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        delay = 0.02
        while True:
            try:
                return await self._open_once(max(deadline - loop.time(), 0.001))
            except ConnectionError as exc:
                refused = isinstance(exc.__cause__, ConnectionRefusedError)
                left = deadline - loop.time()
                if not refused or left <= 0 or self._closed:
                    if refused:
                        raise ConnectionError(
                            f"tcp: nothing listens at {self.where}: refused for "
                            f"{self._timeout:g}s (connect_timeout)"
                        ) from exc.__cause__
                    raise
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 0.25)

    async def _open_once(self, timeout: float) -> _ClientProtocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _ClientProtocol(self), self._host, self._port, **self._tls
                ),
                timeout,
            )
        except asyncio.TimeoutError as exc:
            raise ConnectionError(
                f"tcp: no connection to {self.where} within {self._timeout:g}s"
            ) from exc
        except ssl.SSLError as exc:  # before OSError, which it is
            raise ConnectionError(
                f"tcp: TLS handshake with {self.where} failed: {tls_failure(exc)}"
            ) from exc
        except OSError as exc:
            error = map_error(exc, f"tcp: cannot connect to {self.where}")
            raise ConnectionError(str(error)) from exc
        if self._closed:
            protocol.transport.abort()
            raise ConnectionError(f"tcp: the connection to {self.where} is closed")
        self._protocol = protocol
        return protocol

    def send_nowait(self, data: bytes, message: Message) -> bool:
        protocol = self._protocol
        if protocol is None or protocol.batcher.write_paused or protocol.transport.is_closing():
            return False  # send() reconnects or waits for the socket
        if data.find(_NL) >= 0:  # (find: "in" first tries the bytes as an int)
            raise MessageError(f"message {message.id} holds a raw newline; it cannot be framed")
        protocol.write_frame(data)
        return True

    async def send(self, data: bytes, message: Message) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport.is_closing():
            protocol = await self._reconnect(protocol)
        if data.find(_NL) >= 0:  # (find: "in" first tries the bytes as an int)
            raise MessageError(f"message {message.id} holds a raw newline; it cannot be framed")
        protocol.write_frame(data)
        if protocol.batcher.write_paused:
            try:
                await protocol.batcher.drain(self._send_timeout)
            except ConnectionError as exc:
                if protocol.batcher.error is not None:
                    raise
                # The server reads nothing: the frames stay queued on the connection (they go
                # out if it reads again), and the sender learns of the stall in bounded time.
                raise ConnectionError(
                    f"tcp: server {self.where} took no data for {self._send_timeout:g}s "
                    "(send_timeout); it is stalled or overloaded"
                ) from exc

    async def _reconnect(self, old: _ClientProtocol | None) -> _ClientProtocol:
        if self._closed:
            raise ConnectionError(f"tcp: the connection to {self.where} is closed")
        if old is not None:
            # Closing but not yet reported: report it now, before anything goes out on a new
            # connection, so that the new connection's requests are not failed by old news.
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
        protocol.flush()
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
    * ``max_frame_size``: the longest frame read or written, in bytes without the newline
      (1 MiB by default). A peer sending more is disconnected; a client refuses larger
      messages with ``MessageTooLarge`` before sending.
    * ``connect_timeout``: seconds a client waits for a connection (5 by default).
    * ``max_connections`` (server): connections served at once (1024 by default); a
      connection past it is closed at once and counted ``too_many_connections``.
    * ``idle_timeout`` (server): seconds a connection may send nothing before it is closed
      and counted ``idle_timeout`` (300 by default; None turns it off).
    * ``max_buffered`` (server): bytes of partial (unfinished) frames held for all
      connections together (64 MiB by default); the connection whose frame would pass it is
      cut and counted ``buffer_limit``.
    * ``max_write_buffer`` (server): bytes of replies that may wait for one peer that reads
      none of them (4 MiB by default); past it the connection is cut and the reply counted
      ``reply_failed``.
    * ``reuse_port`` (server; Linux and BSDs): several servers, in one process or several,
      listen on one port and the kernel spreads connections between them.
    * ``send_timeout``: seconds a client's ``send`` waits while the server reads nothing and
      the connection's buffers are full (10 by default); then it raises ``ConnectionError``.

    TLS (off unless one of these is given; docs/security.md has examples):

    * ``tls``: an ``ssl.SSLContext`` to use as it is (a server-side one for a server, made with
      ``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)``, a client-side one for a
      client), or True to make one from the options below (a client with no ``cafile`` then
      trusts the system's CAs). A context excludes the options below but
      ``server_hostname``.
    * ``certfile``: a PEM file with a certificate (and its key, unless ``keyfile``): a server's
      own certificate, which a TLS server requires; a client's, for mutual TLS.
    * ``keyfile``: the PEM private key of ``certfile``, if it is not in that file.
    * ``cafile``: PEM CA certificates. A client trusts only these for its server's
      certificate; a server checks client certificates against them, and requires one.
    * ``client_cert`` (server): ``"required"`` (the default with ``cafile``: mutual TLS),
      ``"optional"`` (checked when sent) or ``"none"`` (the default without ``cafile``). A
      handshake that fails (no certificate when one is required, an unknown CA, a client that
      speaks no TLS, longer than ``connect_timeout``) is counted ``tls_handshake`` and closed.
    * ``server_hostname`` (client): the name the server's certificate must carry; the
      ``address`` by default.

    A handler reads the subject of the client's certificate, when it sent one, as
    ``msg.peer_identity`` (``"CN=orders,O=Shop"``). Files are read, and a key checked against
    its certificate, when the server or client is made (``ValueError`` naming the option);
    a server with no certificate is refused when it starts.
    """

    name = "tcp"
    capabilities = Capabilities(max_message_size=DEFAULT_MAX_FRAME_SIZE)

    api_version = API_VERSION

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        port: int = 0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        limits: ServerLimits | None = None,
        reuse_port: bool = False,
        *,
        options: Mapping[str, Any],
        tls: TlsSettings | None = None,
    ) -> None:
        self.tls = tls
        self.reuse_port = reuse_port
        self.limits = limits or ServerLimits(
            max_frame_size,
            DEFAULT_MAX_CONNECTIONS,
            DEFAULT_IDLE_TIMEOUT,
            DEFAULT_MAX_BUFFERED,
            DEFAULT_MAX_WRITE_BUFFER,
        )
        self.address = address
        self.port = port
        self.max_frame_size = max_frame_size
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.options = options
        if max_frame_size != DEFAULT_MAX_FRAME_SIZE:
            # The core reads the limit off the instance: a client then refuses what its own
            # decoder limit (and, configured alike, its server's) would reject.
            self.capabilities = Capabilities(max_message_size=max_frame_size)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> TcpTransport:
        """Read the options listed in the class docstring."""
        opts = Options(cls.name, options)
        address = opts.get("address", DEFAULT_ADDRESS)
        if not isinstance(address, str) or not address:
            raise ValueError(f"address must be a host name or IP address, got {address!r}")
        size = opts.integer("max_frame_size", DEFAULT_MAX_FRAME_SIZE, minimum=1)
        idle: float | None = None
        if opts.get("idle_timeout", DEFAULT_IDLE_TIMEOUT) is not None:
            idle = opts.number("idle_timeout", DEFAULT_IDLE_TIMEOUT, positive=True)
        limits = ServerLimits(
            size,
            opts.integer("max_connections", DEFAULT_MAX_CONNECTIONS, minimum=1),
            idle,
            opts.integer("max_buffered", max(DEFAULT_MAX_BUFFERED, 4 * size), minimum=size),
            opts.integer("max_write_buffer", max(DEFAULT_MAX_WRITE_BUFFER, 2 * size), minimum=size),
        )
        tls = read_tls(opts)
        return cls(
            address,
            opts.port(),
            size,
            opts.number("connect_timeout", DEFAULT_CONNECT_TIMEOUT, positive=True),
            opts.number("send_timeout", DEFAULT_SEND_TIMEOUT, positive=True),
            limits,
            opts.flag("reuse_port", False),
            options=opts.finish(),
            tls=tls,
        )

    async def listen(self, receiver: Receiver) -> Listener:
        listener = (
            TcpListener(receiver, self.limits)
            if self.tls is None
            else TlsListener(receiver, self.limits, self.tls.server_context(), self.connect_timeout)
        )
        await listener.bind(self.address, self.port, reuse_port=self.reuse_port)
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
        # A client's first connection waits for a server that is still starting; a RECEIVED
        # link (target given) does not: the ack path must not wait on absent servers.
        await connection.open(retry=target is None)
        return connection
