"""The server side: a ROUTER socket, its receive loop, and the peers replies go back to.

A ROUTER prefixes every incoming message with the routing id of the connection it came on,
and sends a message whose first frame is a routing id back on that connection. So one socket
serves one-way sends and requests alike: a frame arrives as ``[routing id, frame]``, and the
reply leaves as ``[routing id, reply]``. :class:`ZmqPeer` holds the routing id.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import zmq
import zmq.asyncio

import distro_core as distro

from ._errors import wrap
from ._options import IPC_HOST

__all__ = ["ZmqListener", "ZmqPeer"]

BATCH = 512
"""Frames taken without awaiting, once the socket is readable; then the loop gets a turn."""

MAX_PEERS = 4096
"""Peers remembered by routing id, so a busy sender costs no new Peer per frame."""

_NOBLOCK = zmq.NOBLOCK


class ZmqPeer(distro.Peer):
    """One connection into the ROUTER: replies to it go out with its routing id in front."""

    __slots__ = ("_identity", "_listener")

    def __init__(self, host: str | None, identity: bytes, listener: ZmqListener) -> None:
        super().__init__(host)
        self._identity = identity
        self._listener = listener

    def send(self, data: bytes, reply_to: str) -> None:
        """Queue ``data`` for this peer without blocking.

        :raises distro.ConnectionError: the peer has gone (ROUTER_MANDATORY makes the ROUTER
            say so instead of dropping the reply).
        :raises distro.TransportError: the peer's queue is at the high-water mark (it is not
            reading), or the server is closed.
        """
        self._listener._reply(self._identity, data)


class ZmqListener(distro.Listener):
    """A bound ROUTER socket feeding a :class:`distro_core.Receiver`.

    :ivar address: ``(host, port)`` for tcp; ``(endpoint, 0)`` for ipc.
    :ivar endpoint: the endpoint as bound (the real port in place of ``*``).
    """

    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        receiver: distro.Receiver,
        endpoint: str,
        address: tuple[str, int],
        linger_ms: int,
    ) -> None:
        self.address = address
        self.endpoint = endpoint
        self._socket = socket
        # The same socket without futures, for draining without an await per frame. Sends
        # still go through the asyncio socket, which re-arms its edge-triggered wake-up.
        self._sync: zmq.Socket[bytes] = zmq.Socket.shadow(socket.underlying)
        self._receiver = receiver
        self._linger_ms = linger_ms
        self._ipc = endpoint.startswith("ipc://")
        self._peers: dict[bytes, ZmqPeer] = {}
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._closed = False
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._serve(), name=f"distro-zmq-server {endpoint}"
        )

    # -- back-pressure and lifecycle ------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop taking frames; ZeroMQ queues them up to the high-water mark, then TCP pushes
        back on the clients."""
        self._paused = True
        self._resumed.clear()

    def resume_reading(self) -> None:
        """Take frames again."""
        self._paused = False
        self._resumed.set()

    async def aclose(self) -> None:
        """Stop the receive loop and close the socket (bounded by its linger). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._peers.clear()
        self._socket.close(linger=self._linger_ms)

    # -- receiving ------------------------------------------------------------------------

    async def _serve(self) -> None:
        arecv = self._socket.recv_multipart
        recv = self._sync.recv
        sync = self._sync
        peers = self._peers
        receiver = self._receiver
        while True:
            if self._paused:
                await self._resumed.wait()
                continue
            try:
                frames = await arecv(copy=False)
            except zmq.ZMQError as exc:
                if await self._receive_failed(exc):
                    return
                continue
            self._take_frames(frames)
            # Drain what is already queued without a future per frame: the await above costs
            # a loop turn, this costs two C calls per frame.
            budget = BATCH
            while budget and not self._paused:
                budget -= 1
                try:
                    identity = recv(_NOBLOCK)
                    # ZMTP has no empty message, so a routing id is always followed by a frame.
                    peer = peers.get(identity)
                    if peer is None:
                        frame = recv(_NOBLOCK, copy=False)
                        peer = self._peer(identity, frame)
                        data = frame.bytes
                    else:
                        data = recv(_NOBLOCK)
                    if sync.rcvmore:
                        self._drop_rest(identity, 2)
                        continue
                except zmq.Again:
                    break
                except zmq.ZMQError as exc:
                    if await self._receive_failed(exc):
                        return
                    break
                try:
                    receiver.frame_received(data, peer)
                except Exception as exc:  # the core's bug must not stop the server
                    receiver.frame_dropped("internal", f"receiver raised {exc!r}")

    def _take_frames(self, frames: list[Any]) -> None:
        """Hand one awaited ``[routing id, frame]`` message to the receiver."""
        identity = frames[0].bytes
        if len(frames) != 2:
            self._receiver.frame_dropped(
                "frames",
                f"zmq peer {identity.hex()} sent {len(frames) - 1} frames in one message; "
                "a distro message is exactly one",
            )
            return
        peer = self._peers.get(identity)
        if peer is None:
            peer = self._peer(identity, frames[1])
        try:
            self._receiver.frame_received(frames[1].bytes, peer)
        except Exception as exc:  # the core's bug must not stop the server
            self._receiver.frame_dropped("internal", f"receiver raised {exc!r}")

    def _peer(self, identity: bytes, frame: zmq.Frame) -> ZmqPeer:
        """A Peer for a routing id not seen yet; ``frame`` carries the connection's metadata."""
        if self._ipc:
            host: str | None = IPC_HOST
        else:
            try:
                host = str(frame.get("Peer-Address"))
            except zmq.ZMQError:
                host = None
        peer = ZmqPeer(host, identity, self)
        # Only ids ZeroMQ generated (a zero byte, then a counter) are never reused by another
        # connection; a peer-chosen id may later name a different host, so it is not cached.
        if identity[:1] == b"\x00":
            peers = self._peers
            if len(peers) >= MAX_PEERS:
                del peers[next(iter(peers))]
            peers[identity] = peer
        return peer

    def _drop_rest(self, identity: bytes, seen: int) -> None:
        """Discard the remaining frames of a message with too many and count it."""
        sync = self._sync
        while sync.rcvmore:
            sync.recv(_NOBLOCK, copy=False)
            seen += 1
        self._receiver.frame_dropped(
            "frames",
            f"zmq peer {identity.hex()} sent {seen - 1} frames in one message; "
            "a distro message is exactly one",
        )

    async def _receive_failed(self, exc: zmq.ZMQError) -> bool:
        """A receive error other than 'nothing queued': report it, then go on after a pause.

        :returns: whether the loop should stop (the socket is closed).
        """
        if self._closed or self._socket.closed:
            return True
        self._receiver.frame_dropped("recv_error", f"zmq: receiving on {self.endpoint}: {exc}")
        # Not a synchronisation: a persistent error must not spin the loop.
        await asyncio.sleep(0.05)
        return False

    # -- replying -------------------------------------------------------------------------

    def _reply(self, identity: bytes, data: bytes) -> None:
        if self._closed:
            raise distro.ConnectionError(f"zmq: server at {self.endpoint} is closed")
        # Sent through the asyncio socket: when the receive loop is waiting, it re-arms the
        # socket's edge-triggered wake-up, which a send on the plain shadow could swallow.
        done = cast(
            "asyncio.Future[object]",
            self._socket.send_multipart((identity, data), flags=_NOBLOCK),
        )
        exc = done.exception()
        if exc is None:
            return
        if isinstance(exc, zmq.Again):
            raise distro.TransportError(
                f"zmq: reply to peer {identity.hex()} on {self.endpoint} not sent: its queue is "
                "at the high-water mark (the client is not reading)"
            ) from exc
        if isinstance(exc, (zmq.ZMQError, OSError)):
            raise wrap(exc, f"reply to peer {identity.hex()} on {self.endpoint}") from exc
        raise exc
