"""The pigeon transport's I/O shell: asyncio Unix-domain stream sockets.

A server binds ``<roost>/<port>.sock``; a client connects to it and keeps the link open. Both
directions carry length-prefixed frames (``_frames``); replies go back on the link the request
came in on. The roost is a directory private to the user (created ``0700``, refused when it
belongs to someone else or others can write to it), since anyone who can reach a socket file
can send to the server behind it.

What every transport needs comes from distro's kit (``distro_core.transport``): options are
read with ``Options``, ``OSError`` becomes distro's errors through ``map_error``, and each
accepted link hands its frames to the core through a ``FrameInlet``, which holds them while
the core has paused reading.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import random
import socket
import stat
import tempfile
from collections.abc import Mapping
from typing import Any

import distro_core as distro
from distro_core import transport as kit

from ._frames import FrameDecoder, Oversized, encode

__all__ = ["MAX_MESSAGE_SIZE", "PigeonTransport", "default_roost"]

MAX_MESSAGE_SIZE = 1 << 20
"""The largest encoded message one frame carries (1 MiB)."""

# Past this much unsent reply data for one client, replies to it are dropped: a client that
# never reads must not grow the server's memory without bound.
_MAX_WRITE_BUFFER = 8 * MAX_MESSAGE_SIZE
# Unix socket paths are limited to 104 bytes on macOS and 108 on Linux, terminator included.
_MAX_PATH = 103
_EPHEMERAL = range(49152, 65536)
_UNREACHABLE = kit.UNREACHABLE_ERRNOS | {errno.ENOENT}


def default_roost() -> str:
    """The default directory of socket files: ``$TMPDIR/distro-pigeon-<uid>``."""
    return os.path.join(tempfile.gettempdir(), f"distro-pigeon-{os.getuid()}")


def _socket_path(roost: str, port: int) -> str:
    path = os.path.join(roost, f"{port}.sock")
    if len(os.fsencode(path)) > _MAX_PATH:
        raise ValueError(f"pigeon socket path {path!r} is longer than {_MAX_PATH} bytes")
    return path


def _prepare_roost(roost: str) -> None:
    try:
        os.makedirs(roost, mode=0o700, exist_ok=True)
        info = os.stat(roost)
    except OSError as exc:
        raise kit.map_error(exc, f"pigeon: cannot use roost {roost!r}") from exc
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise distro.TransportError(
            f"pigeon roost {roost!r} belongs to another user or is writable by others; "
            "pass an address (a directory) that only you can write to"
        )


def _bind(path: str) -> socket.socket:
    """Bind a listening socket at ``path``, replacing a socket file nobody listens on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or _is_alive(path):
                raise
            os.unlink(path)  # left behind by a server that died without closing
            sock.bind(path)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


class _Peer(kit.Peer):
    __slots__ = ("_link",)

    def __init__(self, roost: str, link: _ServerLink) -> None:
        super().__init__(roost)
        self._link = link

    def send(self, data: bytes, reply_to: str) -> None:
        link = self._link
        if link.transport is None or link.transport.is_closing():
            raise distro.ConnectionError(f"pigeon client of {link.path} has gone")
        if link.transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            raise distro.TransportError(f"pigeon client of {link.path} is not reading its replies")
        link.transport.write(encode(data))


class _ServerLink(asyncio.Protocol):
    """One accepted client of a listener."""

    def __init__(self, listener: _PigeonListener) -> None:
        self.listener = listener
        self.path = listener.path
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(MAX_MESSAGE_SIZE)
        self._peer = _Peer(listener.address[0], self)
        # One read may hold hundreds of frames: those read after the core paused wait in the
        # inlet, since handing them all over would defeat the back-pressure.
        self.inlet = kit.FrameInlet(listener.receiver)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.listener.links.add(self)
        if self.listener.paused:
            self.pause()

    def data_received(self, data: bytes) -> None:
        inlet = self.inlet
        for frame in self._decoder.feed(data):
            if isinstance(frame, Oversized):
                self.listener.receiver.frame_dropped(
                    "too_large",
                    f"pigeon frame of {frame.size} bytes on {self.path}; "
                    f"the limit is {MAX_MESSAGE_SIZE}",
                )
            else:
                inlet.deliver(frame, self._peer)

    def pause(self) -> None:
        """Hold frames and stop reading the socket."""
        self.inlet.pause()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        """Hand over the frames held while paused, then read again, unless the core paused
        again meanwhile."""
        if not self.inlet.resume():
            return
        if self.transport is None:
            return
        if self.transport.is_closing():
            self.listener.links.discard(self)  # the link was only kept for its held frames
        else:
            self.transport.resume_reading()

    def discard_held(self) -> None:
        """The listener is closing: frames read but never handed over are dropped, each
        counted ``closing``."""
        count = self.inlet.close()
        for _ in range(count):
            self.listener.receiver.frame_dropped(
                "closing", f"pigeon client of {self.path}: {count} frame(s) read but not handled"
            )

    def eof_received(self) -> bool:
        if self._decoder.pending:
            self.listener.receiver.frame_dropped(
                "truncated", f"pigeon client of {self.path} closed in the middle of a frame"
            )
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.inlet.held:  # otherwise resume() lets go once the held frames are handed over
            self.listener.links.discard(self)


class _PigeonListener(kit.Listener):
    def __init__(self, receiver: kit.Receiver, roost: str, port: int, path: str) -> None:
        self.receiver = receiver
        self.address = (roost, port)
        self.path = path
        self.links: set[_ServerLink] = set()
        self.paused = False
        self._server: asyncio.AbstractServer | None = None
        self._inode = os.stat(path).st_ino

    def pause_reading(self) -> None:
        self.paused = True
        for link in self.links:
            link.pause()

    def resume_reading(self) -> None:
        self.paused = False
        for link in list(self.links):
            if self.paused:
                break  # the core paused again while taking a link's held frames
            link.resume()

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for link in list(self.links):
            link.discard_held()
            if link.transport is not None:
                link.transport.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 2.0)
        except asyncio.TimeoutError:
            for link in list(self.links):
                if link.transport is not None:
                    link.transport.abort()
        try:
            # Only our own file: a new server may already have replaced it.
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass


class _PigeonConnection(kit.Connection, asyncio.Protocol):
    """A client's link; also the asyncio protocol reading replies from it.

    Frames sent in one loop iteration are written together at its end by the kit's
    ``WriteBatcher``, which also keeps the write back-pressure: a sender waits while the
    server reads more slowly than it sends.
    """

    reply_to = "pigeon"  # replies come back on this very link

    def __init__(self, receiver: kit.ClientReceiver, path: str) -> None:
        self._receiver = receiver
        self.path = path
        self._decoder = FrameDecoder(MAX_MESSAGE_SIZE)
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._lost: asyncio.Future[None] = loop.create_future()
        self._batcher = kit.WriteBatcher(loop, self._write)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            if not isinstance(frame, Oversized):  # the client logs nothing it cannot parse
                self._receiver.frame_received(frame)

    def _write(self, frames: list[bytes]) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.writelines(frames)

    def pause_writing(self) -> None:
        self._batcher.pause_writing()

    def resume_writing(self) -> None:
        self._batcher.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        # A sender waiting for the server to catch up gets this error.
        self._batcher.lost(distro.ConnectionError(f"pigeon link to {self.path} is closed"))
        self._receiver.connection_lost(exc)

    async def send(self, data: bytes, message: distro.Message) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise distro.ConnectionError(f"pigeon link to {self.path} is closed")
        if len(data) > MAX_MESSAGE_SIZE:
            raise distro.MessageTooLarge(len(data), MAX_MESSAGE_SIZE, "pigeon")
        batcher = self._batcher
        batcher.write(encode(data))
        if batcher.congested:
            await batcher.drain()  # the server is slower than us: wait until it catches up

    async def aclose(self) -> None:
        if self._transport is None:
            return
        self._batcher.flush()  # what was sent in this loop iteration goes before the close
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), 2.0)
        except asyncio.TimeoutError:
            self._transport.abort()


class PigeonTransport(kit.Transport):
    """Messages between processes of one machine over Unix-domain stream sockets.

    Options: ``address``, the roost directory holding the socket files (default
    :func:`default_roost`), and ``port``, the number naming a server's socket file (0 picks a
    free one for a server; a client names its server's).

    :param roost: the roost directory, absolute.
    :param port: the server's number (0: any free one, for a server).
    :param options: the options as the user gave them, for ``describe()``.
    """

    name = "pigeon"
    capabilities = kit.Capabilities(max_message_size=MAX_MESSAGE_SIZE)
    api_version = 2  # the contract it was written for: a core with another one refuses it

    def __init__(self, roost: str, port: int, *, options: Mapping[str, Any] | None = None) -> None:
        self.roost = roost
        self.port = port
        if options is not None:
            self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PigeonTransport:
        """Read ``address`` and ``port`` (unknown options are refused by the kit's reader).

        :raises TypeError: an unknown option.
        :raises ValueError: an empty or too long roost, a bad port.
        """
        opts = kit.Options(cls.name, options)
        roost = opts.optional_string("address")
        if roost is None:
            roost = default_roost()
        elif not roost:
            raise ValueError("pigeon option 'address' must be a directory path, got ''")
        roost = os.path.abspath(roost)
        _socket_path(roost, 65535)  # a roost too long fails now, not at bind
        return cls(roost, opts.port("port", 0), options=opts.finish())

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        _prepare_roost(self.roost)
        ports = [self.port] if self.port else random.sample(_EPHEMERAL, 64)
        for port in ports:
            path = _socket_path(self.roost, port)
            try:
                sock = _bind(path)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and not self.port:
                    continue  # taken: try another free number
                raise kit.map_error(exc, f"pigeon: cannot listen at {path}") from exc
            listener = _PigeonListener(receiver, self.roost, port, path)
            try:
                listener._server = await asyncio.get_running_loop().create_unix_server(
                    functools.partial(_ServerLink, listener), sock=sock
                )
            except OSError as exc:
                sock.close()
                raise kit.map_error(exc, f"pigeon: cannot listen at {path}") from exc
            return listener
        raise distro.AddressInUse(f"pigeon found no free port in {self.roost}")

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        roost, port = (self.roost, self.port) if target is None else target
        if not isinstance(roost, str) or type(port) is not int or not 0 < port <= 65535:
            if target is None:
                raise ValueError("a pigeon client needs the server's port (the 'port' option)")
            # A target comes from a message's headers, not from the user: a link error.
            raise distro.ConnectionError(f"pigeon: cannot connect to {target!r}")
        path = _socket_path(roost, port)
        connection = _PigeonConnection(receiver, path)
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: connection, path)
        except OSError as exc:
            # No socket file is no server there, as a refused connection is.
            raise kit.map_error(
                exc, f"pigeon: cannot connect to {path}", unreachable=_UNREACHABLE
            ) from exc
        return connection
