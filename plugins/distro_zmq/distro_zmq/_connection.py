"""The client side: a DEALER socket connected to one server's ROUTER.

ZeroMQ connects in the background and reconnects by itself, so opening never fails for want of
a server: frames sent before the server is there wait in the socket's queue (up to the
high-water mark) and go out once it is. At the high-water mark a send waits at most
``send_timeout`` seconds, then raises :class:`distro_core.TransportError`.

Frames sent in one event-loop iteration are written to the socket together at its end (as the
transport contract allows), not one by one as they are sent. Handing ZeroMQ a burst back to
back lets its I/O thread take the whole burst in one wake-up and one TCP write; frames trickled
in between the sender's other work each cost that thread a wake-up, and cost the receiving
side one too. Measured on the project's benchmark, this is most of what a one-way message
costs the two processes together beyond the Python work.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import NoReturn

import zmq

import distro_core as distro

from ._pump import SocketPump

__all__ = ["ZmqConnection"]

BATCH = 512
"""Replies taken in one go; then the loop gets a turn and the drain goes on at the next."""

SEND_BATCH = 256
"""Frames held for the end of the loop iteration at most (fewer when ``hwm`` is lower); a send
past that writes the held frames itself, or waits for room at the high-water mark."""

_log = logging.getLogger("distro.zmq")
_NOBLOCK = zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE


class ZmqConnection(distro.Connection):
    """A DEALER socket feeding replies to a :class:`distro_core.ClientReceiver`.

    :ivar endpoint: the server's endpoint.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        receiver: distro.ClientReceiver,
        endpoint: str,
        send_timeout: float,
        linger_ms: int,
        hwm: int,
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
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._limit = min(SEND_BATCH, hwm)
        self._flush_due = False
        self._pump = SocketPump(
            sock, self._drain, receiver.connection_lost, f"client of {endpoint}", self._flush
        )

    async def send(self, data: bytes, message: distro.Message) -> None:
        """Queue one frame for the server; it is written at the end of this loop iteration.

        :raises distro.TransportError: the queue stayed at the high-water mark for
            ``send_timeout`` seconds (the server is not reading, or not there).
        :raises distro.ConnectionError: the connection is closed.
        """
        if self._pump.closed:
            self._raise_closed()
        out = self._out
        if len(out) >= self._limit:
            await self._make_room()
        out.append(data)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write the held frames, in order, until ZeroMQ's queue is full.

        At the high-water mark the rest stay held and the pump calls this again when there is
        room. A ZeroMQ error other than ``EAGAIN`` fails the connection (the pump tells the
        core); the held frames go with it.
        """
        out = self._out
        pump = self._pump
        if pump.closed or not out:
            out.clear()
            self._flush_due = False
            return
        send = self._send
        done = 0
        try:
            for data in out:
                send(data, _NOBLOCK)
                done += 1
        except zmq.Again:
            del out[:done]
            # Held until the pump sees room: it looks at once, then on the descriptor.
            pump.want_write = True
            pump.poke()
            return
        except zmq.ZMQError as exc:
            del out[:done]
            pump.fail(exc)
            if pump.closed:
                out.clear()
            else:  # interrupted by a signal (the pump took it so): nothing is lost, go on
                self._loop.call_soon(self._flush)
            return
        out.clear()
        self._flush_due = False
        pump.want_write = False
        # The sends may have taken the socket's wake-up for a reply that arrived meanwhile.
        pump.poke()

    async def _make_room(self) -> None:
        """Wait until fewer than the limit of frames are held.

        :raises distro.TransportError: not within ``send_timeout`` (at the high-water mark).
        :raises distro.ConnectionError: the connection closed or failed meanwhile.
        """
        pump = self._pump
        if not pump.want_write:
            # Not at the high-water mark: a long burst within one iteration; write it now.
            self._flush()
        loop = self._loop
        deadline = loop.time() + self._send_timeout
        while len(self._out) >= self._limit and not pump.closed:
            if not await pump.writable(deadline - loop.time()):
                raise distro.TransportError(
                    f"zmq: send to {self.endpoint} waited {self._send_timeout:g}s at the "
                    "high-water mark and was given up (the server is not reading, or not there)"
                )
        if pump.closed:
            self._raise_closed()

    def _raise_closed(self) -> NoReturn:
        """:raises distro.ConnectionError: always; from the socket's failure, if it failed."""
        raise distro.ConnectionError(
            f"zmq: connection to {self.endpoint} is closed"
        ) from self._pump.error

    async def aclose(self) -> None:
        """Stop reading and close the socket; frames still queued get ``linger`` seconds to
        leave, in ZeroMQ's I/O thread, so this never blocks. Idempotent."""
        out = self._out
        if out and not self._pump.closed:
            self._flush()
            if out:
                # At the high-water mark with frames still held: they cannot be handed over
                # without waiting, and closing does not wait.
                _log.warning(
                    "distro zmq client: %d frame(s) to %s discarded on close: the queue was at "
                    "the high-water mark",
                    len(out),
                    self.endpoint,
                )
                out.clear()
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
