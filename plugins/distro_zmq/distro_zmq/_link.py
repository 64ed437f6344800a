"""Whether a client's DEALER is connected: read from ZeroMQ's socket monitor.

ZeroMQ connects in the background and never says so through the socket itself: ``connect()``
returns at once and sends queue while nothing listens. The socket monitor
(``zmq_socket_monitor``, pyzmq's ``Socket.get_monitor_socket``) reports each step on a PAIR
socket instead. The link counts as **up** from ``ZMQ_EVENT_HANDSHAKE_SUCCEEDED`` (the TCP or
ipc connection is made and the ZMTP handshake with a ZeroMQ peer is done: frames sent now
reach the server's socket) until ``ZMQ_EVENT_DISCONNECTED`` (that connection is gone; ZeroMQ
reconnects by itself, every ``ZMQ_RECONNECT_IVL``, 100 ms by default, and the next handshake
brings the link up again). ``ZMQ_EVENT_CONNECT_RETRIED`` counts the attempts, and a failed
handshake (something that is not ZeroMQ answered) is remembered for the error message.

The monitor socket is read from the event loop like the DEALER itself: its ``ZMQ_FD`` is
watched with ``loop.add_reader`` and drained until ``EAGAIN`` on every wake-up (the descriptor
is edge-triggered, and nothing else calls the monitor socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq
from zmq.utils.monitor import parse_monitor_message

__all__ = ["EVENTS", "LinkWatch"]

_HANDSHAKE_FAILED = {
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "the handshake failed",
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "the peer does not speak ZMTP",
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "the peer refused authentication",
}

EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
"""The monitor events a client watches."""

_UP = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DOWN = int(zmq.EVENT_DISCONNECTED)
_RETRIED = int(zmq.EVENT_CONNECT_RETRIED)
_AUTH_FAILED = int(zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class LinkWatch:
    """Follows the monitor events of one connecting socket.

    :param sock: the DEALER, already monitored (``sock.get_monitor_socket(EVENTS)`` made
        ``monitor`` before ``sock.connect``, so no event is missed).
    :param monitor: the PAIR socket the events arrive on; closed by :meth:`close`.
    :param went_down: called when a link that was up is lost (not when it never came up).
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        went_down: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._monitor = monitor
        self._went_down = went_down
        self._loop = asyncio.get_running_loop()
        self._fd = int(monitor.getsockopt(zmq.FD))
        self._waiters: list[asyncio.Future[None]] = []
        self.up = False
        """Whether a connection with a completed handshake exists now."""
        self.ever_up = False
        """Whether the link was ever up."""
        self.down_since = self._loop.time()
        """Loop time the link went down (or the watch started), while it is down."""
        self.attempts = 0
        """Connection attempts ZeroMQ scheduled again after one failed or broke."""
        self.handshake_error: str | None = None
        """Why the last handshake failed, if one did."""
        self.refused = False
        """Whether the server refused this client's credentials before the link was ever up."""
        self.closed = False
        self._loop.add_reader(self._fd, self.read)
        self._loop.call_soon(self.read)  # events may be queued already

    def read(self) -> None:
        """Take every event queued on the monitor socket."""
        monitor = self._monitor
        while not self.closed:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:  # the context was terminated: the DEALER's pump reports it
                return
            try:
                event = int(parse_monitor_message(frames)["event"])
            except Exception:  # not a monitor message: nothing else writes there
                continue
            self._event(event)

    def _event(self, event: int) -> None:
        if event == _UP:
            self.up = self.ever_up = True
            self.handshake_error = None
            self._wake()
        elif event == _DOWN:
            if self.up:
                self.up = False
                self.down_since = self._loop.time()
                self._went_down()
        elif event == _RETRIED:
            self.attempts += 1
        else:
            failed = _HANDSHAKE_FAILED.get(event)
            if failed is not None:
                self.handshake_error = failed
                if event == _AUTH_FAILED and not self.ever_up:
                    self.refused = True
                    # The server refused this client's credentials (a CURVE key it does not
                    # let in): trying again cannot help, so open() fails now, not at its
                    # time-out. ZeroMQ still retries in the background.
                    self._wake()

    def _wake(self) -> None:
        """Let every waiter of :meth:`wait_up` look again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_up(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the link to be up; True once it is."""
        if self.up:
            return True
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return self.up

    def close(self) -> None:
        """Stop watching and close the monitor socket (before the DEALER is closed).
        Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.up = False
        self._loop.remove_reader(self._fd)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)  # wait_up() returns False
        if not self._sock.closed:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
        self._monitor.close(linger=0)
