"""The server side: a ROUTER socket, the drain that reads it, and the peers replies go back to.

A ROUTER prefixes every incoming message with the routing id of the connection it came on,
and sends a message whose first frame is a routing id back on that connection. So one socket
serves one-way sends and requests alike: a frame arrives as ``[routing id, frame]``, and the
reply leaves as ``[routing id, reply]``. :class:`ZmqPeer` holds the routing id.

Nothing is held here while the core has paused reading, so the kit's ``FrameInlet`` has no
work to do: the drain takes one frame at a time and looks at the pause before each, so unread
frames stay in ZeroMQ's queue (bounded by the high-water mark, then TCP pushes back).
"""

from __future__ import annotations

import asyncio
import errno
import socket

import zmq

import distro_core as distro
from distro_core import transport as kit

from ._curve import Admission
from ._errors import UNREACHABLE
from ._options import IPC_HOST, address_of
from ._pump import SocketPump

__all__ = ["ZmqListener", "ZmqPeer"]

BATCH = 512
"""Frames taken in one go; then the loop gets a turn and the drain goes on at the next."""

RELEASE_TIMEOUT = 1.0
"""Seconds ``aclose`` waits for ZeroMQ to let go of the bound address."""

MAX_PEERS = 4096
"""Peers remembered by routing id, so a busy sender costs no new Peer per frame."""

_RELEASE_POLL = 0.002
_NOBLOCK = zmq.NOBLOCK
_SNDMORE_NOBLOCK = zmq.SNDMORE | zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE


class ZmqPeer(kit.Peer):
    """One connection into the ROUTER: replies to it go out with its routing id in front.

    :ivar identity: over CURVE, the client's public key (Z85 text), as the ZAP handler
        admitted it (see ``_curve``); else None.
    """

    __slots__ = ("_listener", "_routing_id", "identity")

    def __init__(
        self,
        host: str | None,
        routing_id: bytes,
        listener: ZmqListener,
        identity: str | None = None,
    ) -> None:
        super().__init__(host)
        self._routing_id = routing_id
        self._listener = listener
        self.identity = identity

    def send(self, data: bytes, reply_to: str) -> None:
        """Queue ``data`` for this peer without blocking.

        :raises distro.ConnectionError: the peer has gone (ROUTER_MANDATORY makes the ROUTER
            say so instead of dropping the reply), or the server is closed.
        :raises distro.TransportError: the peer's queue is at the high-water mark (it is not
            reading).
        """
        self._listener._reply(self._routing_id, data)


class ZmqListener(kit.Listener):
    """A bound ROUTER socket feeding a :class:`~distro_core.transport.Receiver`.

    :ivar address: ``(host, port)`` for tcp; ``(endpoint, 0)`` for ipc.
    :ivar endpoint: the endpoint as bound (the real port in place of ``*``).
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        receiver: kit.Receiver,
        endpoint: str,
        address: tuple[str, int],
        linger_ms: int,
        admission: Admission | None = None,
    ) -> None:
        self.address = address
        self._admission = admission
        self.endpoint = endpoint
        self._sock = sock
        self._recv = sock.recv
        # The backend's send, under pyzmq's Python wrapper (which only adds the draft-API
        # routing_id and group arguments): 0.29 µs a frame instead of 0.66.
        self._send = super(zmq.Socket, sock).send
        self._more = sock.getsockopt
        self._draining = False
        self._receiver = receiver
        self._linger_ms = linger_ms
        self._ipc = endpoint.startswith("ipc://")
        self._peers: dict[bytes, ZmqPeer] = {}
        self._released = False
        self._pump = SocketPump(sock, self._drain, self._failed, f"server at {endpoint}")

    # -- back-pressure and lifecycle ------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop taking frames; ZeroMQ queues them up to the high-water mark, then TCP pushes
        back on the clients."""
        self._pump.paused = True

    def resume_reading(self) -> None:
        """Take frames again."""
        self._pump.paused = False
        self._pump.poke()

    async def aclose(self) -> None:
        """Stop reading and close the socket, then wait (at most :data:`RELEASE_TIMEOUT`) until
        ZeroMQ's I/O thread has let go of the address, so it can be bound again at once.
        Queued replies get ``linger`` seconds in the background. Idempotent."""
        if self._released:
            return
        self._released = True
        self._pump.close(self._linger_ms)
        if self._admission is not None:
            self._admission.close()
        self._peers.clear()
        # libzmq closes the listening socket in its I/O thread a moment after zmq_close and
        # signals nothing when done, so there is no event to wait on: look a few times.
        for _ in range(round(RELEASE_TIMEOUT / _RELEASE_POLL)):
            if _released(self.endpoint):
                return
            await asyncio.sleep(_RELEASE_POLL)

    # -- receiving ------------------------------------------------------------------------

    def _drain(self) -> bool:
        """Hand every queued frame to the receiver, up to :data:`BATCH`.

        :returns: True when frames may be left (the budget ran out).
        :raises zmq.ZMQError: the socket failed (the pump handles it).
        """
        recv = self._recv
        peers = self._peers
        receiver = self._receiver
        received = receiver.frame_received
        pump = self._pump
        self._draining = True
        try:
            for _ in range(BATCH):
                if pump.paused or pump.closed:
                    return False
                try:
                    identity = recv(_NOBLOCK)
                    # ZMTP has no empty message, so a routing id is always followed by a
                    # frame. Taken as a Frame, it carries its more-flag (read in C) and its
                    # connection's metadata: getsockopt(RCVMORE) would cost 0.7 µs a frame.
                    frame = recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    return False
                if frame.more:
                    self._drop_rest(identity)
                    continue
                peer = peers.get(identity)
                if peer is None:
                    peer = self._peer(identity, frame)
                try:
                    received(frame.bytes, peer)
                except Exception as exc:  # a fault in the core must not stop the server
                    receiver.frame_dropped("internal", f"receiver raised {exc!r}")
            return True
        finally:
            self._draining = False

    def _failed(self, error: distro.TransportError) -> None:
        """The socket broke (its context was terminated): nothing more will be read."""
        self._receiver.frame_dropped("socket_failed", f"{error}; the server reads no more")

    def _peer(self, identity: bytes, frame: zmq.Frame) -> ZmqPeer:
        """A Peer for a routing id not seen yet; ``frame`` carries the connection's metadata."""
        if self._ipc:
            host: str | None = IPC_HOST
        else:
            try:
                host = str(frame.get("Peer-Address"))
            except zmq.ZMQError:
                host = None
        user: str | None = None
        if self._admission is not None:
            try:
                user = str(frame.get("User-Id"))  # set by the ZAP handler: the client's key
            except zmq.ZMQError:
                user = None
        peer = ZmqPeer(host, identity, self, user)
        # Only ids ZeroMQ generated (a zero byte, then a counter) are never reused by another
        # connection; a peer-chosen id may later name a different host, so it is not cached.
        if identity[:1] == b"\x00":
            peers = self._peers
            if len(peers) >= MAX_PEERS:
                del peers[next(iter(peers))]
            peers[identity] = peer
        return peer

    def _drop_rest(self, identity: bytes) -> None:
        """Discard the remaining frames of a message with too many, and count it."""
        count = 1
        while self._more(_RCVMORE):
            self._recv(_NOBLOCK, copy=False)
            count += 1
        self._receiver.frame_dropped(
            "frames",
            f"zmq peer {identity.hex()} sent {count} frames in one message; "
            "a distro message is exactly one",
        )

    # -- replying -------------------------------------------------------------------------

    def _reply(self, identity: bytes, data: bytes) -> None:
        if self._pump.closed:
            raise distro.ConnectionError(f"zmq: server at {self.endpoint} is closed")
        try:
            # With ROUTER_MANDATORY the routing id frame fails if the peer is gone (EHOSTUNREACH)
            # or not reading (EAGAIN at its high-water mark); the rest then always goes.
            self._send(identity, _SNDMORE_NOBLOCK)
            self._send(data, _NOBLOCK)
        except zmq.Again as exc:
            raise distro.TransportError(
                f"zmq: reply to peer {identity.hex()} on {self.endpoint} not sent: its queue is "
                "at the high-water mark (the client is not reading)"
            ) from exc
        except zmq.ZMQError as exc:
            raise kit.map_error(
                exc,
                f"zmq: reply to peer {identity.hex()} on {self.endpoint}",
                unreachable=UNREACHABLE,
            ) from exc
        if not self._draining:
            # The send may have taken the socket's wake-up for frames that arrived meanwhile.
            # Within a drain it does not matter: the drain reads on until EAGAIN (or pokes).
            self._pump.poke()


def _released(endpoint: str) -> bool:
    """Whether nothing listens at ``endpoint`` any more (it could be bound again)."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not hasattr(socket, "AF_UNIX") or path.startswith("@"):
            return True
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(path)
        except OSError as exc:
            # Refused or gone: released. EAGAIN: a full backlog, so something still listens.
            return exc.errno != errno.EAGAIN
        finally:
            probe.close()
        return False
    host, port = address_of(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR, as libzmq binds: connections in TIME_WAIT do not count, listeners do.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True
