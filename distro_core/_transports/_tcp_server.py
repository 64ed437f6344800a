"""The server side of the ``tcp`` transport, and the frame writer both sides share.

Each accepted connection is a :class:`ServerProtocol`: bytes in, split by a
:class:`~distro_core.framing.FrameDecoder`, each frame handed to the core with the connection's one
:class:`TcpPeer` (the path replies take back). :class:`TcpListener` owns the listening socket and
the connections: back-pressure (pause and resume reading on all of them) and a bounded close.

Both sides read as ``asyncio.BufferedProtocol``: the transport does ``recv_into`` a bytearray
allocated once, not ``recv(256 KiB)``, which allocates (and, past glibc's mmap threshold, maps and
unmaps) 256 KiB for every read however few bytes arrived. Every tcp connection on one event loop,
server side and client side, shares one read buffer (:func:`loop_read_buffer`): the loop runs
one read at a time and the decoder copies out what it keeps before the read returns, so a
thousand idle connections cost no read buffers at all.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import cast

import attrs

from .._exceptions import ConnectionError, TransportError
from ..framing import FrameDecoder, FrameTooLarge, FramingError
from ..transport import FrameInlet, Listener, Peer, Receiver, WriteBatcher, map_error

__all__ = [
    "CLOSE_GRACE",
    "READ_SIZE",
    "FrameWriter",
    "ServerLimits",
    "TcpListener",
    "loop_read_buffer",
    "loop_read_view",
    "where",
]

CLOSE_GRACE = 1.0
"""Seconds a closing connection may take to flush its writes before it is aborted."""

READ_SIZE = 65536
"""The most bytes one read takes from a socket (the size of the reused read buffer)."""


@attrs.frozen
class ServerLimits:
    """What one tcp server lets its peers hold (see :class:`~distro_core._transports.tcp.
    TcpTransport` for the options and their defaults).

    :ivar max_frame_size: the longest frame, in bytes.
    :ivar max_connections: connections served at once; one more is closed at once.
    :ivar idle_timeout: seconds a connection may send nothing before it is closed, or None.
    :ivar max_buffered: bytes of partial frames held for all connections together.
    :ivar max_write_buffer: bytes of replies queued for one peer that does not read them.
    """

    max_frame_size: int
    max_connections: int
    idle_timeout: float | None
    max_buffered: int
    max_write_buffer: int


_READ_BUFFERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, bytearray] = (
    weakref.WeakKeyDictionary()
)


_READ_VIEWS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


def loop_read_buffer(loop: asyncio.AbstractEventLoop) -> bytearray:
    """The read buffer every tcp connection of ``loop`` reads into; it goes when the loop goes."""
    buffer = _READ_BUFFERS.get(loop)
    if buffer is None:
        buffer = _READ_BUFFERS[loop] = bytearray(READ_SIZE)
    return buffer


def loop_read_view(loop: asyncio.AbstractEventLoop) -> memoryview:
    """A memoryview of :func:`loop_read_buffer`: what ``get_buffer`` hands out. asyncio's TLS
    layer reads a record in pieces into ``buf[offset:]``, which of a bytearray is a copy (the
    bytes would be lost); of a memoryview it is the same memory."""
    view = _READ_VIEWS.get(loop)
    if view is None:
        view = _READ_VIEWS[loop] = memoryview(loop_read_buffer(loop))
    return view


_NL = b"\n"


def where(host: object, port: object) -> str:
    """``host:port`` for messages, with IPv6 hosts in brackets."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


class FrameWriter(asyncio.BufferedProtocol):
    """Writes frames to one connection; the base of both sides' protocols, which read into a
    reused buffer (``get_buffer`` and ``buffer_updated``).

    Writes go through the kit's :class:`~distro_core.transport.WriteBatcher`: the first frame
    written in a loop iteration goes out at once as one ``write`` of a joined copy (for a few
    hundred bytes the copy is cheaper than a second ``write`` and its second system call);
    frames written after it in the same iteration are joined into one ``write`` when the
    iteration ends, or sooner past :data:`FLUSH_AT` bytes or under write back-pressure: a burst
    costs one system call, not one per message.
    """

    transport: asyncio.Transport
    _read_buffer: bytearray
    write_frame: Callable[[bytes], None]
    """Write one frame (without its newline); the caller checked the connection is open."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._read_view = loop_read_view(loop)
        self.batcher = WriteBatcher(loop, self._write_joined, first=self._write_one)
        self.write_frame = self.batcher.write  # one call per frame, no wrapper
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an asyncio.Transport: uvloop's are not subclasses.
        self.transport = cast("asyncio.Transport", transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Every connection of the loop reads into the one shared buffer (see the module
        # docstring); the subclass sets ``_read_buffer``, the buffer under this view.
        return self._read_view

    def _write_one(self, data: bytes) -> None:
        self.transport.write(data + _NL)

    def _write_joined(self, queued: list[bytes]) -> None:
        if not self.transport.is_closing():  # else lost with the connection, as unsent bytes are
            queued.append(b"")  # so that the join ends with a newline, without another copy
            self.transport.write(_NL.join(queued))

    @property
    def write_paused(self) -> bool:
        """Whether the socket pushes back."""
        return self.batcher.write_paused

    def flush(self) -> None:
        """Write the queued frames now, with one ``write``."""
        self.batcher.flush()

    def pause_writing(self) -> None:
        self.batcher.pause_writing()

    def resume_writing(self) -> None:
        self.batcher.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.batcher.error is None:
            self.batcher.lost(ConnectionError(f"tcp: the connection is closed ({exc})"))
        if not self.lost.done():
            self.lost.set_result(None)


class TcpPeer(Peer):
    """The client at the other end of one server connection; one per connection.

    :ivar identity: over TLS, the subject of the client's certificate (see ``_tls``).
    """

    __slots__ = ("_protocol", "identity")

    def __init__(self, host: str | None, protocol: ServerProtocol) -> None:
        super().__init__(host)
        self._protocol = protocol
        self.identity: str | None = None

    def send(self, data: bytes, reply_to: str) -> None:
        protocol = self._protocol
        if protocol.transport.is_closing():
            raise ConnectionError(f"tcp: the connection from {protocol.where} is gone")
        if len(data) > protocol.limit:
            raise TransportError(
                f"tcp: a reply of {len(data)} bytes to {protocol.where} exceeds "
                f"max_frame_size of {protocol.limit} bytes"
            )
        if data.find(_NL) >= 0:  # (find: "in" first tries the bytes as an int)
            raise TransportError(f"tcp: a reply to {protocol.where} holds a raw newline")
        if protocol.batcher.write_paused:
            protocol.check_write_buffer(len(data))
        protocol.write_frame(data)


class ServerProtocol(FrameWriter):
    """One accepted connection: bytes in -> decoder -> frames to the core; replies out."""

    def __init__(self, listener: TcpListener) -> None:
        super().__init__(listener.loop)
        self._listener = listener
        self._receiver = listener.receiver
        self._inlet = FrameInlet(listener.receiver)
        self._decoder = FrameDecoder(listener.limits.max_frame_size)
        self._read_buffer = listener.read_buffer
        self._peer = TcpPeer(None, self)
        self._reading_paused = False
        self._buffered = 0  # this connection's share of listener.buffered
        self.last_active = listener.loop.time()
        self.limit = listener.limits.max_frame_size
        self.where = "?"
        self._closing = False

    def set_identity(self, identity: str | None) -> None:
        """Who the peer is, as TLS authenticated it (before :meth:`connection_made`)."""
        self._peer.identity = identity

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        if peername:
            self._peer.host = str(peername[0])
            self.where = where(peername[0], peername[1])
        listener = self._listener
        if listener.closed:
            self.transport.abort()
            return
        if len(listener.connections) >= listener.limits.max_connections:
            self._receiver.frame_dropped(
                "too_many_connections",
                f"tcp peer {self.where}: {len(listener.connections)} connections are open "
                f"(max_connections={listener.limits.max_connections}); closed",
            )
            self.transport.abort()
            return
        listener.connections.add(self)
        if listener.paused:
            self.update_reading()

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            self._discard(nbytes)
            return
        try:
            frames = self._decoder.feed_from(self._read_buffer, nbytes)
        except FramingError as exc:
            self._inlet.deliver_all(exc.frames, self._peer)
            reason = "too_large" if isinstance(exc, FrameTooLarge) else "invalid"
            self._receiver.frame_dropped(reason, f"tcp peer {self.where}: {exc}; disconnected")
            self.transport.abort()
            return
        self.last_active = self._listener.loop.time()
        held = self._decoder.buffered
        if held != self._buffered:
            self._account(held)
        # If the core pauses mid-chunk, the inlet keeps the rest rather than overfill its
        # backlog; they go first when reading resumes.
        self._inlet.deliver_all(frames, self._peer)

    def _account(self, held: int) -> None:
        """Track the bytes of this connection's partial frame against the listener's total;
        past ``max_buffered`` the connection that grew it is cut."""
        listener = self._listener
        listener.buffered += held - self._buffered
        self._buffered = held
        if held and listener.buffered > listener.limits.max_buffered:
            self._receiver.frame_dropped(
                "buffer_limit",
                f"tcp peer {self.where}: partial frames of all connections hold "
                f"{listener.buffered} bytes (max_buffered={listener.limits.max_buffered}); "
                "disconnected",
            )
            self._release_buffer()
            self.transport.abort()

    def _release_buffer(self) -> None:
        self._listener.buffered -= self._buffered
        self._buffered = 0

    def check_write_buffer(self, adding: int) -> None:
        """Refuse a reply to a peer that reads nothing once ``max_write_buffer`` bytes wait
        for it: the connection is cut, and the reply fails (counted by the core).

        :raises ConnectionError: the peer's queued replies are over the limit.
        """
        queued = self.transport.get_write_buffer_size() + self.batcher.queued + adding
        limit = self._listener.limits.max_write_buffer
        if queued > limit:
            self.transport.abort()
            raise ConnectionError(
                f"tcp: peer {self.where} reads no replies ({queued} bytes would wait, "
                f"max_write_buffer={limit}); disconnected"
            )

    def eof_received(self) -> bool | None:
        self._end_of_stream()
        return None  # close our side too: a half-closed peer gets no more replies

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._end_of_stream()
        self._release_buffer()
        if not self._inlet.held:  # else kept until the frames it holds are delivered on resume
            self._listener.connections.discard(self)

    def _end_of_stream(self) -> None:
        try:
            self._decoder.feed(b"")
        except FramingError as exc:
            self._receiver.frame_dropped("truncated", f"tcp peer {self.where}: {exc}")

    def pause_writing(self) -> None:
        # A peer that does not read its replies stops being read from: the write buffer
        # stays near the high-water mark instead of growing with every request it sends.
        super().pause_writing()
        self.update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.update_reading()

    def update_reading(self) -> None:
        """Pause or resume reading to match the listener's and this connection's state."""
        if self.batcher.write_paused or self._listener.paused:
            self._inlet.pause()
            if not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()  # a no-op once the transport is closing
            return
        if not self._reading_paused:
            return
        self._reading_paused = False
        if not self._inlet.resume():
            return  # the core paused again while taking the held frames
        if self.lost.done():
            self._listener.connections.discard(self)
        else:
            self.transport.resume_reading()

    def discard_held(self) -> None:
        """The listener is closing: frames read but never handed to the core are dropped,
        each counted ``closing`` (never silently)."""
        count = self._inlet.close()
        for _ in range(count):
            self._receiver.frame_dropped(
                "closing", f"tcp peer {self.where}: {count} frame(s) read but not handled"
            )

    def close(self) -> None:
        """End the stream after writing what is queued, then read (and drop) until the peer
        closes its side: closing a socket with unread bytes would reset the connection, and
        a reset can destroy replies the peer has not read yet. The listener bounds how long
        this may take."""
        self.flush()
        self._closing = True
        transport = self.transport
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _discard(self, nbytes: int) -> None:
        """Bytes that came after the stream was ended: their frames are counted ``closing``."""
        try:
            count = len(self._decoder.feed_from(self._read_buffer, nbytes))
        except FramingError as exc:
            count = len(exc.frames)
        for _ in range(count):
            self._receiver.frame_dropped(
                "closing", f"tcp peer {self.where}: {count} frame(s) came after the server closed"
            )


class TcpListener(Listener):
    """A listening socket and its connections."""

    def __init__(self, receiver: Receiver, limits: ServerLimits) -> None:
        self.receiver = receiver
        self.limits = limits
        self.buffered = 0
        """Bytes of partial frames held by all connections."""
        self.loop = asyncio.get_running_loop()
        self._sweeper: asyncio.TimerHandle | None = None
        # Shared by every connection's reads (see the module docstring).
        self.read_buffer = loop_read_buffer(self.loop)
        self.connections: set[ServerProtocol] = set()
        self.paused = False
        self.closed = False
        self._server: asyncio.AbstractServer | None = None

    async def bind(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen on ``host`` and ``port`` (0: any free one); with ``reuse_port``, share the
        port with other listeners that ask for it too (SO_REUSEPORT).

        :raises AddressInUse: the port is taken on that address.
        :raises TransportError: the address cannot be listened on for another reason.
        """
        try:
            server = await self.loop.create_server(
                self.accept, host, port, reuse_port=reuse_port or None
            )
        except OSError as exc:
            raise map_error(exc, f"tcp: cannot listen on {where(host, port)}") from exc
        self._server = server
        name = server.sockets[0].getsockname()
        self.address = (str(name[0]), int(name[1]))
        self._schedule_sweep()

    def accept(self) -> asyncio.BaseProtocol:
        """The protocol of a connection just accepted (a TLS listener handshakes first)."""
        return ServerProtocol(self)

    def _schedule_sweep(self) -> None:
        idle = self.limits.idle_timeout
        if idle is not None and not self.closed:
            # Idle connections are found by a sweep, not a timer per connection: one timer
            # handle per listener, whatever the number of connections.
            self._sweeper = self.loop.call_later(min(idle / 2, 30.0), self._sweep)

    def _sweep(self) -> None:
        idle = self.limits.idle_timeout
        assert idle is not None
        cutoff = self.loop.time() - idle
        for protocol in list(self.connections):
            if protocol.last_active < cutoff and not protocol.lost.done():
                self.receiver.frame_dropped(
                    "idle_timeout",
                    f"tcp peer {protocol.where}: nothing sent for {idle:g}s; disconnected",
                )
                protocol.transport.abort()
        self._schedule_sweep()

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
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        protocols = list(self.connections)
        for protocol in protocols:
            protocol.discard_held()
            if not protocol.lost.done():
                protocol.close()
        waiting = [p.lost for p in protocols if not p.lost.done()]
        if waiting:
            # close() waits for queued writes to go out; a peer that does not read is aborted.
            _, stuck = await asyncio.wait(waiting, timeout=CLOSE_GRACE)
            if stuck:
                for protocol in protocols:
                    if not protocol.lost.done():
                        protocol.transport.abort()
                await asyncio.wait(stuck, timeout=CLOSE_GRACE)
        self.connections.clear()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_GRACE)
            except asyncio.TimeoutError:
                pass
