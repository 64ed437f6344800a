"""Driving a plain pyzmq socket from an asyncio loop, without a future per message.

``zmq.asyncio`` makes a future for every send and receive; measured here that costs 10-20 µs a
message, against 0.5-2 µs for a non-blocking call on the plain socket. So the transport does what
``zmq.asyncio`` does inside, once per burst instead of once per message: it watches the socket's
``ZMQ_FD`` with ``loop.add_reader`` and reads ``ZMQ_EVENTS`` to learn what the socket can do.

That descriptor is edge-triggered: it signals that ZeroMQ's state changed, and any call on the
socket (a send too) may consume the signal. So after every burst of sends the pump looks at
``ZMQ_EVENTS`` itself (:meth:`SocketPump.poke`), and a drain only stops when the socket says
``EAGAIN`` or its budget is spent (then it goes on at the next loop turn). A ``recv`` that says
``EAGAIN`` has processed the socket's pending commands, which clears the descriptor; so when
the pump only reads, it drains at once on a wake-up and saves the ``ZMQ_EVENTS`` call.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

import zmq

import distro_core as distro
from distro_core import transport as kit

from ._errors import UNREACHABLE

__all__ = ["SocketPump"]

# Plain ints: ``events & zmq.POLLIN`` goes through enum.Flag's Python operators (0.6 µs).
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_EVENTS = zmq.EVENTS


class SocketPump:
    """Calls ``drain`` when ``sock`` has frames to read, and ``flush`` when it has room again.

    :param sock: a plain (not ``zmq.asyncio``) socket, used only from this loop's thread.
    :param drain: reads what is queued; returns True when it stopped with frames left (its
        budget spent), so the pump calls it again at the next loop turn. ZeroMQ errors other
        than ``EAGAIN`` it lets through.
    :param failed: told of a ZeroMQ error that stops the socket (a terminated context); the
        pump then stops watching it.
    :param what: names the socket in errors.
    :param flush: called when the socket may take frames again while :attr:`want_write` is
        set (a writer met the high-water mark); it handles its own errors.
    :raises distro.TransportError: the running loop cannot watch file descriptors (the
        Windows proactor loop: use the selector loop there).
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        drain: Callable[[], bool],
        failed: Callable[[distro.TransportError], None],
        what: str,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self._sock = sock
        self._what = what
        self._failed = failed
        self._flush = flush
        # For integer options getsockopt gives an int; typed loosely so the hot path has no cast.
        self._events: Callable[[int], Any] = sock.getsockopt
        self._drain = drain
        self._loop = asyncio.get_running_loop()
        self._fd = int(sock.getsockopt(zmq.FD))
        self._scheduled = False
        self.closed = False
        """Whether the socket is closed, or failed and no longer read (set by the pump only)."""
        self.paused = False
        """While true, frames stay queued in ZeroMQ (back-pressure)."""
        self.want_write = False
        """While true, ``flush`` is called whenever the socket has room."""
        self.error: distro.TransportError | None = None
        """What broke the socket, once it has failed."""
        self._watching = False
        try:
            self._loop.add_reader(self._fd, self.check)
            self._watching = True
        except NotImplementedError as exc:
            raise distro.TransportError(
                f"zmq: {what}: this event loop cannot watch sockets ({type(self._loop).__name__});"
                " on Windows use asyncio.WindowsSelectorEventLoopPolicy()"
            ) from exc
        # Frames may already be queued (a connect that raced ahead): look once.
        self.poke()

    def poke(self) -> None:
        """Look at the socket at the next loop turn (after a send, or on resuming)."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._look)

    def check(self) -> None:
        """The descriptor's callback: ZeroMQ's state changed."""
        if self.closed:
            return
        if self.paused or self.want_write:
            self._act()
            return
        # Only reading: a drain that ends in EAGAIN clears the descriptor itself, and reading
        # ZMQ_EVENTS first (1.4 µs) would only tell what the first recv finds out anyway.
        try:
            if self._drain():
                self.poke()
        except zmq.ZMQError as exc:
            self.fail(exc)

    def _look(self) -> None:
        self._scheduled = False
        if not self.closed:
            self._act()

    def _act(self) -> None:
        """Read ``ZMQ_EVENTS`` and do what it allows: drain, flush."""
        try:
            # Reading the events also clears the descriptor, so a paused pump does not spin.
            events: int = self._events(_EVENTS)
            if events & _POLLIN and not self.paused:
                if self._drain():
                    self.poke()
                elif self.want_write:
                    events = self._events(_EVENTS)
        except zmq.ZMQError as exc:
            self.fail(exc)
            return
        if events & _POLLOUT and self.want_write and self._flush is not None:
            self._flush()

    def fail(self, exc: zmq.ZMQError) -> None:
        """A call on the socket raised ``exc`` (not ``EAGAIN``): unless it was a signal, the
        socket is broken; stop watching it and tell the owner."""
        if self.closed or self._sock.closed:
            return
        if exc.errno == errno.EINTR:  # a signal came in: nothing is wrong, look again
            self.poke()
            return
        error = kit.map_error(exc, f"zmq: {self._what}", unreachable=UNREACHABLE)
        error.__cause__ = exc
        self.error = error
        self.closed = True
        self._unwatch()
        self._failed(error)

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self._fd)

    def close(self, linger_ms: int) -> None:
        """Stop watching and close the socket; ZeroMQ's I/O thread spends at most
        ``linger_ms`` delivering what is still queued, so this never blocks."""
        if self._sock.closed:
            return
        self.closed = True
        self._unwatch()
        self._sock.close(linger=linger_ms)
