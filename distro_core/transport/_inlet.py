"""The frame inlet: hands frames to the core, holding them while the core has paused reading.

Every listener needs this: the core calls ``pause_reading()`` in the middle of a burst (its
handlers are at ``max_concurrency``), but the frames already read from a socket, a buffer or a
subscription still have to go somewhere. The inlet keeps them, in order, and hands them over
first when reading resumes; a transport stops reading its source while :attr:`FrameInlet.paused`
is true, which bounds what it holds to what one read brought in. Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .._transport import Peer, Receiver

__all__ = ["FrameInlet"]


class FrameInlet:
    """Delivers frames to a :class:`~distro_core.transport.Receiver` in arrival order, and
    holds them while paused.

    :param receiver: the core's receiver (the server), as given to ``Transport.listen``.
    """

    __slots__ = ("_deliver", "_held", "closed", "paused", "receiver")

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._deliver = receiver.frame_received
        self._held: deque[tuple[bytes, Peer]] = deque()
        self.paused = False
        """True between :meth:`pause` and :meth:`resume`: the transport should stop reading."""
        self.closed = False
        """True after :meth:`close`: frames are discarded."""

    @property
    def held(self) -> int:
        """How many frames are held, waiting for :meth:`resume`."""
        return len(self._held)

    def deliver(self, data: bytes, peer: Peer) -> None:
        """Hand one frame to the core now, or hold it (paused, or older frames still held)."""
        if self.paused or self._held:
            if not self.closed:
                self._held.append((data, peer))
            return
        self._deliver(data, peer)

    def deliver_all(self, frames: Iterable[bytes], peer: Peer) -> None:
        """Hand several frames from one peer to the core, in order. If the core pauses while
        taking them, the rest are held rather than pushed into its backlog."""
        if self.paused or self._held:
            if not self.closed:
                self._held.extend((frame, peer) for frame in frames)
            return
        deliver = self._deliver
        remaining = iter(frames)
        for frame in remaining:
            deliver(frame, peer)
            if self.paused:
                self._held.extend((frame, peer) for frame in remaining)
                return

    def pause(self) -> None:
        """Hold frames from now on (call from ``Listener.pause_reading``)."""
        self.paused = True

    def resume(self) -> bool:
        """Stop holding: hand the held frames to the core in order, until it pauses again.

        :returns: True when nothing is held any more and reading may resume; False when the
            core paused again while taking them (reading stays paused).
        """
        if self.closed:
            return False
        self.paused = False
        held = self._held
        deliver = self._deliver
        while held:
            data, peer = held.popleft()
            deliver(data, peer)
            if self.paused:
                return False
        return not self.paused

    def close(self) -> int:
        """Discard the held frames and take no more.

        :returns: how many frames were discarded (a transport counts them).
        """
        self.closed = True
        self.paused = True  # so that deliver() needs only one test on its fast path
        count = len(self._held)
        self._held.clear()
        return count
