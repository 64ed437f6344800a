"""Groups for the ``memory`` transport: competing consumers, redelivery and dead letters.

Servers made with the same ``group=`` name and port in one :class:`MemoryNetwork` form a group:
each message sent to the port goes to **one** member, round robin over the members that are
serving. The group enforces the rules a broker with redelivery does, so that tests over memory
catch the mistakes production would:

* a message whose handler raised is delivered again, to any member, after
  ``redelivery_delay`` seconds; after ``max_deliveries`` deliveries it becomes a
  :class:`~distro_core.transport.DeadLetter` with the last error text, kept on the network
  (:meth:`MemoryNetwork.dead_letters`, at most ``dead_letters`` per group, oldest dropped first
  and counted) until it is sent again with :meth:`MemoryNetwork.redrive`;
* a message a member did not take (it was closing or overloaded) goes to another member without
  counting a failed delivery;
* a message that can never be handled (not a message, no route) is not redelivered.

Memory keeps nothing across processes: it is not durable, and a message sent while the group
has no member raises ``ConnectionError`` as a message to an unbound port does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING

import attrs

from .._exceptions import ConnectionError
from .._transport import DeadLetter, Outcome, Peer

if TYPE_CHECKING:
    from .memory import _MemoryListener

__all__ = ["GroupRules", "MemoryGroup"]

log = logging.getLogger("distro")


@attrs.frozen
class GroupRules:
    """The redelivery rules of one group, from its first member's options.

    :ivar max_deliveries: deliveries before a message becomes a dead letter.
    :ivar redelivery_delay: seconds before a failed message is delivered again.
    :ivar dead_letters: dead letters kept per group.
    """

    max_deliveries: int = 5
    redelivery_delay: float = 0.1
    dead_letters: int = 1000


class _Delivery(Peer):
    """One delivery of one message to a group member: the path back to its sender, and the
    settling that decides whether the group delivers it again."""

    __slots__ = ("_group", "_sender", "data", "deliveries")

    settles = True

    def __init__(self, group: MemoryGroup, sender: Peer, data: bytes, deliveries: int) -> None:
        super().__init__(sender.host)
        self._group = group
        self._sender = sender
        self.data = data
        self.deliveries = deliveries

    def send(self, data: bytes, reply_to: str) -> None:
        self._sender.send(data, reply_to)

    def settle(self, outcome: Outcome, detail: str | None = None) -> None:
        if outcome is Outcome.FAILED:
            self._group.failed(self, detail or "a handler failed")
        elif outcome is Outcome.RETURNED:
            self._group.returned(self, detail or "not taken")

    def again(self, deliveries: int) -> _Delivery:
        """The next delivery of the same message."""
        return _Delivery(self._group, self._sender, self.data, deliveries)


class MemoryGroup:
    """The members of one group on one port, and its messages' redelivery.

    :param name: the group's name.
    :param port: the port its members share.
    :param rules: redelivery rules.
    """

    def __init__(self, name: str, port: int, rules: GroupRules) -> None:
        self.name = name
        self.port = port
        self.rules = rules
        self.members: list[_MemoryListener] = []
        self.dead: deque[DeadLetter] = deque()
        self.dead_dropped = 0
        """Dead letters dropped because the group kept ``rules.dead_letters`` already."""
        self._turn = itertools.count()
        self._timers: set[asyncio.TimerHandle] = set()

    def pick(self) -> _MemoryListener:
        """The member the next message goes to (round robin over serving members).

        :raises ConnectionError: the group has no member.
        """
        members = self.members
        if not members:
            raise ConnectionError(f"memory group {self.name!r} on port {self.port} has no member")
        return members[next(self._turn) % len(members)]

    def first_delivery(self, sender: Peer, data: bytes) -> _Delivery:
        """The peer a message sent to the group is delivered with."""
        return _Delivery(self, sender, data, 1)

    # -- settling ---------------------------------------------------------------------------

    def failed(self, delivery: _Delivery, error: str) -> None:
        if delivery.deliveries >= self.rules.max_deliveries:
            self._bury(delivery, error)
            return
        self._later(delivery.again(delivery.deliveries + 1), error)

    def returned(self, delivery: _Delivery, reason: str) -> None:
        # Not a failure of the message: another member gets it, without counting a delivery,
        # but a group whose members all refuse must not pass it around for ever.
        others = [m for m in self.members if m.serving]
        if not others:
            self._bury(delivery, f"no member took it ({reason})")
            return
        self._later(delivery.again(delivery.deliveries), reason, delay=0.0)

    def _later(self, delivery: _Delivery, error: str, delay: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        wait = self.rules.redelivery_delay if delay is None else delay
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            if timer is not None:
                self._timers.discard(timer)
            self._redeliver(delivery, error)

        timer = loop.call_later(wait, fire)
        self._timers.add(timer)

    def _redeliver(self, delivery: _Delivery, error: str) -> None:
        for _ in range(len(self.members)):
            try:
                member = self.pick()
            except ConnectionError:
                break
            if member.serving and member.offer(delivery.data, delivery):
                return
        if not self.members:
            self._bury(delivery, f"{error}; no member left to deliver it to")
        else:  # every member's queue is full: try again after the delay
            self._later(delivery, error)

    def _bury(self, delivery: _Delivery, error: str) -> None:
        if len(self.dead) >= self.rules.dead_letters:
            self.dead.popleft()
            self.dead_dropped += 1
            log.warning(
                "distro: memory group %r keeps %d dead letters; dropped the oldest",
                self.name,
                self.rules.dead_letters,
            )
        self.dead.append(DeadLetter(delivery.data, self.name, error, delivery.deliveries))
        log.warning(
            "distro: memory group %r gave up on a message after %d deliveries: %s",
            self.name,
            delivery.deliveries,
            error,
        )

    def redrive(self, sender: Peer) -> int:
        """Deliver every dead letter again, as new messages; returns how many."""
        letters, self.dead = list(self.dead), deque()
        for letter in letters:
            self._redeliver(self.first_delivery(sender, letter.data), letter.error)
        return len(letters)

    def cancel_timers(self) -> None:
        """The group is gone: pending redeliveries are dropped with it."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
