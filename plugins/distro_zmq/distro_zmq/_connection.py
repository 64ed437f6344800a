"""The client side: a DEALER socket connected to one server's ROUTER.

ZeroMQ connects in the background and reconnects by itself; the connection follows it through
the socket monitor (:mod:`._link`), so that distro's contract holds as over tcp:

* ``open`` (the transport's ``connect``) waits until the link is up, letting ZeroMQ retry while
  nothing listens yet (services start in any order), for at most ``connect_timeout`` seconds;
  then it raises :class:`distro_core.ConnectionError` saying how long it tried.
* When an established link is lost, the core is told at once (``connection_lost``: requests
  waiting for replies fail with ``ConnectionError``; confirmed sends are sent again). While it
  is down a send raises ``ConnectionError`` at once instead of queueing for a server that may
  never come back; ZeroMQ keeps reconnecting, and sends go out again once it has.
* Frames ZeroMQ had queued when the link broke stay queued and go out on the next connection
  (frames already written to the dead socket are lost, as over tcp).
* While the server does not read, a send waits at most ``send_timeout`` seconds for room at
  the high-water mark, then raises ``ConnectionError`` (the frame is not queued).

Frames sent in one event-loop iteration are written to the socket together at its end, by the
kit's :class:`~distro_core.transport.WriteBatcher` (sooner past its ``flush_at`` bytes), not
one by one as they are sent. Handing ZeroMQ a burst back to back lets its I/O thread take the
whole burst in one wake-up and one TCP write; frames trickled in between the sender's other
work each cost that thread a wake-up, and cost the receiving side one too. Measured on the
project's benchmark, this is most of what a one-way message costs the two processes together
beyond the Python work. The batch is written with non-blocking sends; at the high-water mark
ZeroMQ refuses the rest, which the batcher keeps, in order, until the socket has room.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
from typing import NoReturn

import zmq

import distro_core as distro
from distro_core import transport as kit

from ._link import LinkWatch
from ._pump import SocketPump

__all__ = ["ZmqConnection"]

BATCH = 512
"""Replies taken in one go; then the loop gets a turn and the drain goes on at the next."""

_log = logging.getLogger("distro.zmq")
_NOBLOCK = zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE
_EAGAIN = errno.EAGAIN
_EINTR = errno.EINTR


class ZmqConnection(kit.Connection):
    """A DEALER socket feeding replies to a :class:`~distro_core.transport.ClientReceiver`.

    :ivar endpoint: the server's endpoint.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        receiver: kit.ClientReceiver,
        endpoint: str,
        send_timeout: float,
        linger_ms: int,
    ) -> None:
        self.endpoint = endpoint
        # Replies come back on the link the request went out on; the text only names it.
        self.reply_to = f"zmq:{next(self._ids)}"
        self._sock = sock
        # The backend's send, under pyzmq's Python wrapper (which only adds the draft-API
        # routing_id and group arguments): 0.29 µs a frame instead of 0.66.
        self._send = super(zmq.Socket, sock).send
        self._recv = sock.recv
        self._more = sock.getsockopt
        self._receiver = receiver
        self._send_timeout = send_timeout
        self._linger_ms = linger_ms
        self._batcher = kit.WriteBatcher(asyncio.get_running_loop(), self._write)
        self._unsent = 0  # frames of the batch being written when the socket broke
        self._pump = SocketPump(
            sock, self._drain, self._failed, f"client of {endpoint}", self._room
        )
        self._link = LinkWatch(sock, monitor, self._went_down)

    async def open(self, connect_timeout: float) -> None:
        """Wait until the link to the server is up (ZeroMQ retries meanwhile).

        :raises distro.ConnectionError: not within ``connect_timeout`` seconds (the
            connection is then closed).
        """
        link = self._link
        if await link.wait_up(connect_timeout):
            return
        closed = self._pump.closed or link.closed
        await self.aclose()
        if closed:
            self._raise_closed()
        if link.refused:
            raise distro.ConnectionError(
                f"zmq: the server at {self.endpoint} refused this client's credentials (its "
                "CURVE public key is not among the server's curve_clients)"
            )
        why = f"; {link.handshake_error}" if link.handshake_error else ""
        raise distro.ConnectionError(
            f"zmq: no connection to {self.endpoint} within {connect_timeout:g}s "
            f"(connect_timeout; {link.attempts + 1} attempt(s){why}): is the server running?"
        )

    def _went_down(self) -> None:
        """The link that was up broke: requests waiting for replies fail at once."""
        if self._pump.closed:
            return
        self._receiver.connection_lost(
            distro.ConnectionError(
                f"zmq: lost the connection to {self.endpoint}; ZeroMQ reconnects by itself"
            )
        )

    def _raise_down(self) -> NoReturn:
        """:raises distro.ConnectionError: always: the link is down."""
        link = self._link
        ago = asyncio.get_running_loop().time() - link.down_since
        raise distro.ConnectionError(
            f"zmq: no connection to {self.endpoint} (lost {ago:.1f}s ago; ZeroMQ reconnects "
            "by itself and sends go out again once it has)"
        )

    @property
    def connected(self) -> bool:
        """Whether the link to the server is up now (see :mod:`._link`)."""
        return self._link.up

    async def send(self, data: bytes, message: distro.Message) -> None:
        """Queue one frame for the server; it is written at the end of this loop iteration.

        :raises distro.ConnectionError: the link to the server is down, or the connection
            is closed, or ZeroMQ's queue stayed at the high-water mark for ``send_timeout``
            seconds (the server is not reading); this frame is not queued.
        """
        if self._pump.closed:
            self._raise_closed()
        if not self._link.up:
            self._raise_down()
        batcher = self._batcher
        if batcher.write_paused:
            await self._wait_for_room()
        batcher.write(data)

    def _write(self, frames: list[bytes]) -> int | None:
        """The batcher's ``write``: send ``frames`` in order until ZeroMQ's queue is full.

        :returns: None when all were sent; else how many, and the batcher keeps the rest
            until the pump sees room (it looks at once, then on the descriptor). A ZeroMQ
            error other than ``EAGAIN`` or ``EINTR`` fails the connection (the pump tells
            :meth:`_failed`), and the rest go with it.
        """
        send = self._send
        pump = self._pump
        done = 0
        try:
            for data in frames:
                send(data, _NOBLOCK)
                done += 1
        except zmq.ZMQError as exc:
            if exc.errno != _EAGAIN and exc.errno != _EINTR:
                self._unsent = len(frames) - done
                pump.fail(exc)
                return None
            pump.want_write = True
            pump.poke()
            return done
        # The sends may have taken the socket's wake-up for a reply that arrived meanwhile.
        pump.poke()
        return None

    def _room(self) -> None:
        """The pump's ``flush``: the socket has room again after refusing frames."""
        self._pump.want_write = False
        # Writes what was refused first; if ZeroMQ refuses some again, _write asks anew.
        self._batcher.resume_writing()

    async def _wait_for_room(self) -> None:
        """Wait until ZeroMQ has taken the frames it refused.

        :raises distro.ConnectionError: not within ``send_timeout`` (at the high-water
            mark), or the connection closed or failed meanwhile.
        """
        try:
            await self._batcher.drain(self._send_timeout)
        except distro.ConnectionError:
            if self._pump.closed or self._batcher.error is not None:
                self._raise_closed()
            raise distro.ConnectionError(
                f"zmq: send to {self.endpoint} waited {self._send_timeout:g}s at the "
                "high-water mark and was given up (the server is not reading: stalled, "
                "overloaded, or its link is down)"
            ) from None

    def _raise_closed(self) -> NoReturn:
        """:raises distro.ConnectionError: always; from the socket's failure, if it failed."""
        raise distro.ConnectionError(
            f"zmq: connection to {self.endpoint} is closed"
        ) from self._pump.error

    def _failed(self, error: distro.TransportError) -> None:
        """The socket broke (its context was terminated): tell senders and the core."""
        closed = distro.ConnectionError(f"zmq: connection to {self.endpoint} is closed")
        closed.__cause__ = error
        self._discard(closed, f"with the socket, which failed: {error}")
        self._link.close()
        self._receiver.connection_lost(error)

    def _discard(self, error: distro.ConnectionError, why: str) -> None:
        """Let go of the frames still held, counting them in the log, and fail waiting
        senders with ``error``."""
        count = self._batcher.lost(error) + self._unsent
        self._unsent = 0
        if count:
            _log.warning(
                "distro zmq client: %d frame(s) to %s discarded %s",
                count,
                self.endpoint,
                why,
            )

    async def aclose(self) -> None:
        """Stop reading and close the socket; frames still queued get ``linger`` seconds to
        leave, in ZeroMQ's I/O thread, so this never blocks. Idempotent."""
        batcher = self._batcher
        if batcher.error is None:
            # Frames held at the high-water mark cannot be handed over without waiting, and
            # closing does not wait: they are discarded and logged.
            batcher.flush()
            closed = distro.ConnectionError(f"zmq: connection to {self.endpoint} is closed")
            self._discard(closed, "on close: the queue was at the high-water mark")
        self._link.close()
        self._pump.close(self._linger_ms)

    def _drain(self) -> bool:
        """Hand every queued reply to the receiver, up to :data:`BATCH`.

        :returns: True when replies may be left (the budget ran out).
        :raises zmq.ZMQError: the socket failed (the pump handles it).
        """
        recv = self._recv
        receiver = self._receiver
        pump = self._pump
        for _ in range(BATCH):
            if pump.closed:
                return False
            try:
                # A Frame carries its more-flag, read in C; getsockopt(RCVMORE) costs 0.7 µs.
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return False
            if frame.more:
                self._drop_rest()
                continue
            try:
                receiver.frame_received(frame.bytes)
            except Exception as exc:  # a fault in the core must not stop the client reading
                _log.error("distro zmq client: receiver raised %r on a reply", exc)
        return True

    def _drop_rest(self) -> None:
        count = 1
        while self._more(_RCVMORE):
            self._recv(_NOBLOCK, copy=False)
            count += 1
        # Only a server that is not distro sends these; a client has no drop counter.
        _log.warning(
            "distro zmq client: dropped a %d-frame message from %s; a reply is one frame",
            count,
            self.endpoint,
        )
