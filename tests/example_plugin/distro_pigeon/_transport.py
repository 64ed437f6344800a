"""The pigeon transport's I/O shell: asyncio Unix-domain stream sockets.

A server binds ``<roost>/<port>.sock``; a client connects to it and keeps the link open. Both
directions carry length-prefixed frames (``_frames``); replies go back on the link the request
came in on. The roost is a directory private to the user (created ``0700``, refused when it
belongs to someone else or others can write to it), since anyone who can reach a socket file
can send to the server behind it.
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
from collections import deque
from collections.abc import Mapping
from typing import Any

import distro_core as distro

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
        raise distro.TransportError(f"pigeon cannot use roost {roost!r}: {exc}") from exc
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


class _Peer(distro.Peer):
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
        # Frames read in one chunk after the server paused us wait here: one read may hold
        # hundreds of frames, and handing them all over would defeat the back-pressure.
        self.held: deque[bytes] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.listener.links.add(self)
        if self.listener.paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        for frame in self._decoder.feed(data):
            if isinstance(frame, Oversized):
                listener.receiver.frame_dropped(
                    "too_large",
                    f"pigeon frame of {frame.size} bytes on {self.path}; "
                    f"the limit is {MAX_MESSAGE_SIZE}",
                )
            elif listener.paused or self.held:
                self.held.append(frame)
            else:
                listener.receiver.frame_received(frame, self._peer)

    def release(self) -> None:
        """Hand over the frames held while paused, until paused again."""
        listener = self.listener
        while self.held and not listener.paused:
            listener.receiver.frame_received(self.held.popleft(), self._peer)
        if not self.held and self.transport is not None and self.transport.is_closing():
            listener.links.discard(self)

    def eof_received(self) -> bool:
        if self._decoder.pending:
            self.listener.receiver.frame_dropped(
                "truncated", f"pigeon client of {self.path} closed in the middle of a frame"
            )
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.held:  # otherwise release() lets go once the last held frame is handed over
            self.listener.links.discard(self)


class _PigeonListener(distro.Listener):
    def __init__(self, receiver: distro.Receiver, roost: str, port: int, path: str) -> None:
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
            if link.transport is not None:
                link.transport.pause_reading()

    def resume_reading(self) -> None:
        self.paused = False
        for link in list(self.links):
            link.release()
            if not self.paused and link.transport is not None:
                link.transport.resume_reading()

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for link in list(self.links):
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


class _PigeonConnection(distro.Connection, asyncio.Protocol):
    """A client's link; also the asyncio protocol reading replies from it."""

    reply_to = "pigeon"  # replies come back on this very link

    def __init__(self, receiver: distro.ClientReceiver, path: str) -> None:
        self._receiver = receiver
        self.path = path
        self._decoder = FrameDecoder(MAX_MESSAGE_SIZE)
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            if not isinstance(frame, Oversized):  # the client logs nothing it cannot parse
                self._receiver.frame_received(frame)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        self.resume_writing()
        self._receiver.connection_lost(exc)

    async def send(self, data: bytes, message: distro.Message) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise distro.ConnectionError(f"pigeon link to {self.path} is closed")
        if len(data) > MAX_MESSAGE_SIZE:
            raise distro.MessageTooLarge(len(data), MAX_MESSAGE_SIZE, "pigeon")
        transport.write(encode(data))
        if self._drained is not None:
            await self._drained  # the server is slower than us: wait until it catches up

    async def aclose(self) -> None:
        if self._transport is None:
            return
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), 2.0)
        except asyncio.TimeoutError:
            self._transport.abort()


class PigeonTransport(distro.Transport):
    """Messages between processes of one machine over Unix-domain stream sockets.

    Options: ``address``, the roost directory holding the socket files (default
    :func:`default_roost`), and ``port``, the number naming a server's socket file (0 picks a
    free one for a server; a client names its server's).
    """

    name = "pigeon"
    capabilities = distro.Capabilities(max_message_size=MAX_MESSAGE_SIZE)
    api_version = 1

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - {"address", "port"})
        if unknown:
            raise TypeError(f"transport 'pigeon' got unknown option(s) {', '.join(unknown)}")
        super().__init__(options)
        roost = options.get("address")
        if roost is None:
            roost = default_roost()
        if not isinstance(roost, str) or not roost:
            raise ValueError(f"pigeon address must be a directory path, got {roost!r}")
        port = options.get("port", 0)
        if type(port) is not int or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0..65535, got {port!r}")
        self.roost = os.path.abspath(roost)
        self.port = port
        _socket_path(self.roost, 65535)  # a roost too long fails now, not at bind

    async def listen(self, receiver: distro.Receiver) -> distro.Listener:
        _prepare_roost(self.roost)
        ports = [self.port] if self.port else random.sample(_EPHEMERAL, 64)
        for port in ports:
            path = _socket_path(self.roost, port)
            try:
                sock = _bind(path)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and not self.port:
                    continue
                if exc.errno == errno.EADDRINUSE:
                    raise distro.AddressInUse(f"pigeon server already listens at {path}") from exc
                raise distro.TransportError(f"pigeon cannot listen at {path}: {exc}") from exc
            listener = _PigeonListener(receiver, self.roost, port, path)
            try:
                listener._server = await asyncio.get_running_loop().create_unix_server(
                    functools.partial(_ServerLink, listener), sock=sock
                )
            except OSError as exc:
                sock.close()
                raise distro.TransportError(f"pigeon cannot listen at {path}: {exc}") from exc
            return listener
        raise distro.AddressInUse(f"pigeon found no free port in {self.roost}")

    async def connect(
        self, receiver: distro.ClientReceiver, target: tuple[str, int] | None = None
    ) -> distro.Connection:
        roost, port = (self.roost, self.port) if target is None else target
        if not isinstance(roost, str) or type(port) is not int or not 0 < port <= 65535:
            raise ValueError(f"a pigeon client needs a roost and the server's port, got {target}")
        path = _socket_path(roost, port)
        connection = _PigeonConnection(receiver, path)
        try:
            await asyncio.get_running_loop().create_unix_connection(lambda: connection, path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise distro.ConnectionError(f"no pigeon server listens at {path}") from exc
        except OSError as exc:
            raise distro.TransportError(f"pigeon cannot connect to {path}: {exc}") from exc
        return connection
