"""Who runs next and what is refused: the server's handler slots shared between peers.

A server runs at most ``max_concurrency`` async handler calls at once (plain handlers run inline
and take no slot). :class:`Scheduler` decides, for each message that needs a slot, whether it
starts now, waits in its peer's queue, or is shed; and, when a slot frees, whose message starts
next. It is pure (no I/O, no clock: the server passes the time), and keyed by the
:class:`~distro_core.transport.Peer` a frame came with: one per tcp connection, per udp source
address, per memory client connection.

The rules (docs/security.md, "Fair share between peers"):

* **Slots.** A message starts when a slot is free, its peer has nothing queued before it (a
  peer's messages start in the order they came), and it is not in the reserve.
* **The reserve.** The last eighth of the slots (:attr:`Scheduler.reserve`) is kept for peers
  that hold few: a peer holding :attr:`Scheduler.light` slots or more cannot take one of them.
  So one peer whose handlers never finish can hold at most seven eighths of the slots, and the
  others still get theirs. Servers with fewer than eight slots have no reserve, nor do servers
  over pub/sub transports, whose one peer is the bus (``one_peer``).
* **Queues.** A message that cannot start waits in its peer's queue, at most
  :attr:`Scheduler.peer_queue` messages per peer and :attr:`Scheduler.max_queued` messages
  (and :data:`MAX_QUEUED_BYTES` encoded bytes) for all peers together. Past that it is shed:
  the server answers a request ``overloaded`` at once and counts a one-way message dropped.
* **Turns.** When a slot frees, peers with queued messages take turns (round robin): one
  message each, so a peer with a long queue does not keep the others waiting.
* **Deadlines.** A queued message whose deadline (the caller's ``replyWithin``) has passed is
  not started: :meth:`Scheduler.take` hands it back as expired.

Plain messages of a peer that has async ones queued wait in the same queue (so that the peer's
handlers still start in arrival order), but take no slot when their turn comes.

The module's I/O part is :func:`within`, which bounds an async handler's run in time (handler
deadlines, given to the dispatch runners by :func:`bounded`).
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections import deque
from collections.abc import Awaitable, Hashable
from typing import Any, Generic, TypeVar

from ._dispatch import Bound, HandlerTimeout
from ._handlers import Entry

__all__ = [
    "EXPIRED",
    "INLINE",
    "MAX_QUEUED_BYTES",
    "STARTED",
    "Scheduler",
    "bounded",
    "within",
]

MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""Encoded bytes of all queued messages together; past it, messages are shed."""

STARTED = 0
""":meth:`Scheduler.take`: the message took a slot; run its handlers in a task."""
INLINE = 1
""":meth:`Scheduler.take`: a plain message whose turn came; run it inline (no slot)."""
EXPIRED = 2
""":meth:`Scheduler.take`: the message's deadline passed while it waited; do not start it."""

T = TypeVar("T")

_Queued = tuple[T, float | None, int, bool]
"""``(item, deadline, size, needs_slot)``."""


class Scheduler(Generic[T]):
    """The slots of one server and the queues of its peers.

    :param max_concurrency: slots: async handler calls running at once.
    :param max_queued: messages waiting for a slot, all peers together; each peer may have a
        quarter of them (at least one). None: four times ``max_concurrency``.
    :param max_queued_bytes: encoded bytes of the waiting messages, all peers together.
    :param one_peer: the transport hands one Peer for every sender (pub/sub: the bus), so
        there are no peers to share between: no reserve, and that peer may fill the queues.
    :raises ValueError: a count is not a positive integer.
    """

    __slots__ = (
        "_queues",
        "_ring",
        "_running",
        "light",
        "max_concurrency",
        "max_queued",
        "max_queued_bytes",
        "peer_queue",
        "queued",
        "queued_bytes",
        "reserve",
        "running",
    )

    def __init__(
        self,
        max_concurrency: int,
        max_queued: int | None = None,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        one_peer: bool = False,
    ) -> None:
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
        max_queued = max_concurrency * 4 if max_queued is None else max_queued
        if type(max_queued) is not int or max_queued < 1:
            raise ValueError(f"max_queued must be a positive integer, got {max_queued!r}")
        self.max_concurrency = max_concurrency
        self.reserve = 0 if one_peer else max_concurrency // 8
        """Slots only peers holding fewer than :attr:`light` slots may take."""
        self.light = max(1, self.reserve // 8)
        self.max_queued = max_queued
        self.peer_queue = max_queued if one_peer else max(1, max_queued // 4)
        self.max_queued_bytes = max_queued_bytes
        self.running = 0
        """Slots taken."""
        self.queued = 0
        """Messages waiting, all peers together."""
        self.queued_bytes = 0
        self._running: dict[Hashable, int] = {}
        self._queues: dict[Hashable, deque[_Queued[T]]] = {}
        # Peers with queued messages, in turn order: the next to be served is at the left.
        self._ring: deque[Hashable] = deque()

    @property
    def waiting(self) -> dict[Hashable, deque[_Queued[T]]]:
        """Peer -> its queue, for peers with queued messages only (read-only use: the server
        tests ``peer in waiting`` to keep a plain message behind its peer's queued ones)."""
        return self._queues

    def holding(self, peer: Hashable) -> int:
        """Slots ``peer`` holds."""
        return self._running.get(peer, 0)

    def start(self, peer: Hashable) -> bool:
        """Give ``peer`` a slot now if the rules allow (see the module docstring).

        :returns: True when the slot is taken (call :meth:`finished` when the work ends);
            False when the message must wait (:meth:`enqueue`).
        """
        # A peer with messages queued must not overtake them: they get the next slot.
        return peer not in self._queues and self._grant(peer)

    def force(self, peer: Hashable) -> None:
        """Count a slot ``peer`` takes whatever the rules say: work already begun (a plain
        handler's awaitable result) that must be awaited. Call :meth:`finished` after."""
        self._running[peer] = self._running.get(peer, 0) + 1
        self.running += 1

    def finished(self, peer: Hashable) -> None:
        """A slot ``peer`` held is free again (then :meth:`take` the next messages)."""
        held = self._running.get(peer, 0) - 1
        if held > 0:
            self._running[peer] = held
        else:
            self._running.pop(peer, None)
        self.running -= 1

    def enqueue(
        self, peer: Hashable, item: T, size: int, deadline: float | None, needs_slot: bool
    ) -> bool:
        """Queue ``item`` behind ``peer``'s earlier messages.

        :param size: the message's encoded size in bytes.
        :param deadline: the time (on the server's clock) after which it is not started.
        :param needs_slot: whether it takes a slot when its turn comes (async handlers).
        :returns: False when the queues are full: shed it.
        """
        queue = self._queues.get(peer)
        if (
            self.queued >= self.max_queued
            or self.queued_bytes + size > self.max_queued_bytes
            or (queue is not None and len(queue) >= self.peer_queue)
        ):
            return False
        if queue is None:
            queue = self._queues[peer] = deque()
            self._ring.append(peer)
        queue.append((item, deadline, size, needs_slot))
        self.queued += 1
        self.queued_bytes += size
        return True

    def take(self, now: float) -> tuple[T, int] | None:
        """The next queued message whose turn it is, peers taking turns.

        :param now: the server's clock, to find expired messages.
        :returns: ``(item, how)``: :data:`STARTED` (a slot is now taken for it),
            :data:`INLINE` (a plain message: no slot) or :data:`EXPIRED` (its deadline
            passed: not started); None when no queued message may start now.
        """
        ring = self._ring
        for _ in range(len(ring)):
            peer = ring[0]
            queue = self._queues[peer]
            item, deadline, size, needs_slot = queue[0]
            if deadline is not None and now >= deadline:
                how = EXPIRED
            elif not needs_slot:
                how = INLINE
            elif self._grant(peer):
                how = STARTED
            else:
                ring.rotate(-1)  # this peer cannot start now; the next one may
                continue
            queue.popleft()
            self.queued -= 1
            self.queued_bytes -= size
            ring.popleft()
            if queue:
                ring.append(peer)  # its next message waits for its next turn
            else:
                del self._queues[peer]
            return item, how
        return None

    def _grant(self, peer: Hashable) -> bool:
        """Give a slot to ``peer``'s first queued message if the rules allow (as :meth:`start`
        does for a message that has nothing queued before it)."""
        running = self.running
        if running >= self.max_concurrency:
            return False
        held = self._running.get(peer, 0)
        if held >= self.light and self.max_concurrency - running <= self.reserve:
            return False
        self._running[peer] = held + 1
        self.running = running + 1
        return True

    def drain(self) -> list[T]:
        """Empty every queue (the server is closing).

        :returns: the queued items, to be counted.
        """
        items = [item for queue in self._queues.values() for item, *_ in queue]
        self._queues.clear()
        self._ring.clear()
        self.queued = self.queued_bytes = 0
        return items


def bounded(default: float | None) -> Bound:
    """The :data:`~distro_core._dispatch.Bound` of a server whose ``handler_timeout`` is
    ``default``: a handler's own ``timeout`` wins; None or ``math.inf`` is no limit."""

    def bound(entry: Entry, awaitable: Awaitable[Any]) -> Awaitable[Any]:
        timeout = default if entry.timeout is None else entry.timeout
        if timeout is None or timeout == math.inf:
            return awaitable
        return within(awaitable, timeout, entry.name)

    return bound


if sys.version_info >= (3, 11):

    async def within(awaitable: Awaitable[Any], timeout: float, name: str) -> Any:
        """Await ``awaitable`` for at most ``timeout`` seconds (an async handler's deadline).

        :raises HandlerTimeout: the deadline passed; the awaitable was cancelled. A
            ``TimeoutError`` the handler raised itself goes through unchanged.
        """
        bound = asyncio.timeout(timeout)
        try:
            async with bound:
                return await awaitable
        except TimeoutError:
            if bound.expired():
                raise HandlerTimeout(name, timeout) from None
            raise

else:  # pragma: no cover - Python 3.10 has no asyncio.timeout

    async def within(awaitable: Awaitable[Any], timeout: float, name: str) -> Any:
        """Await ``awaitable`` for at most ``timeout`` seconds (an async handler's deadline).

        :raises HandlerTimeout: the deadline passed; the awaitable was cancelled.
        """
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = task.get_loop().call_later(timeout, expire)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if expired:
                raise HandlerTimeout(name, timeout) from None
            raise
        finally:
            timer.cancel()
