"""The scheduler alone (``distro_core._scheduler``): who gets a handler slot, what waits in which
peer's queue, whose turn comes next, what is shed and what expires. Pure: no server, no clock
(the tests pass the time). The server's use of it is tested in test_fairness.py and
test_deadlines.py."""

from __future__ import annotations

import asyncio
import math

import pytest

from distro_core._dispatch import HandlerTimeout
from distro_core._handlers import entry
from distro_core._scheduler import EXPIRED, INLINE, STARTED, Scheduler, bounded, within


def take_all(sched: Scheduler[str], now: float = 0.0) -> list[tuple[str, int]]:
    """Everything :meth:`Scheduler.take` hands out now, in order."""
    taken = []
    while (item := sched.take(now)) is not None:
        taken.append(item)
    return taken


# -- slots -------------------------------------------------------------------------------------


def test_small_servers_have_no_reserve_one_peer_may_take_every_slot() -> None:
    sched: Scheduler[str] = Scheduler(4)
    assert sched.reserve == 0
    assert [sched.start("a") for _ in range(5)] == [True] * 4 + [False]
    assert sched.running == 4 and sched.holding("a") == 4


def test_the_last_eighth_is_kept_for_peers_that_hold_few() -> None:
    sched: Scheduler[str] = Scheduler(256)
    assert (sched.reserve, sched.light) == (32, 4)
    started = 0
    while sched.start("hog"):
        started += 1
    assert started == 224  # seven eighths: the hog cannot take the reserve
    # Anyone holding fewer than `light` slots still gets one, down to the last slot.
    assert all(sched.start(f"p{n}") for n in range(32))
    assert not sched.start("p32")  # all 256 taken
    assert sched.running == 256
    sched.finished("p0")
    assert not sched.start("hog")  # the freed slot is in the reserve
    assert sched.start("p0")


def test_in_the_reserve_a_light_peer_may_take_up_to_light_slots() -> None:
    sched: Scheduler[str] = Scheduler(256)
    while sched.start("hog"):
        pass
    assert [sched.start("second") for _ in range(5)] == [True] * 4 + [False]


def test_one_peer_for_every_sender_may_take_every_slot_and_fill_the_queues() -> None:
    # Over pub/sub the transport's one peer is the bus: there is nobody to share with.
    sched: Scheduler[str] = Scheduler(256, one_peer=True)
    assert (sched.reserve, sched.peer_queue) == (0, 1024)
    started = 0
    while sched.start("bus"):
        started += 1
    assert started == 256
    assert all(sched.enqueue("bus", str(n), 1, None, True) for n in range(1024))
    assert not sched.enqueue("bus", "one more", 1, None, True)


def test_finished_frees_the_slot_and_forgets_idle_peers() -> None:
    sched: Scheduler[str] = Scheduler(2)
    assert sched.start("a") and sched.start("a")
    sched.finished("a")
    assert sched.holding("a") == 1 and sched.running == 1
    sched.finished("a")
    assert sched.holding("a") == 0 and sched.running == 0
    assert not sched._running  # no state kept for a peer with nothing running


def test_force_counts_work_already_begun_beyond_the_limits() -> None:
    sched: Scheduler[str] = Scheduler(1)
    assert sched.start("a")
    sched.force("b")
    assert sched.running == 2 and sched.holding("b") == 1
    sched.finished("b")
    assert sched.running == 1


def test_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        Scheduler(0)
    with pytest.raises(ValueError, match="max_queued"):
        Scheduler(4, 0)
    with pytest.raises(ValueError, match="max_concurrency"):
        Scheduler(True)


# -- queues and turns ------------------------------------------------------------------------


def test_a_peer_with_queued_messages_gets_no_slot_before_them() -> None:
    sched: Scheduler[str] = Scheduler(1)
    assert sched.start("a")
    assert sched.enqueue("b", "b1", 10, None, True)
    sched.finished("a")
    assert not sched.start("b")  # b1 is queued first: b's messages start in order
    assert take_all(sched) == [("b1", STARTED)]


def test_peers_take_turns_when_slots_free() -> None:
    sched: Scheduler[str] = Scheduler(1, 100)
    assert sched.start("x")
    for n in range(3):
        assert sched.enqueue("a", f"a{n}", 1, None, True)
    assert sched.enqueue("b", "b0", 1, None, True)
    assert sched.enqueue("c", "c0", 1, None, True)
    order = []
    sched.finished("x")
    while (taken := sched.take(0.0)) is not None:
        item, how = taken
        assert how == STARTED
        order.append(item)
        sched.finished(item[0])
    assert order == ["a0", "b0", "c0", "a1", "a2"]
    assert sched.queued == 0 and sched.queued_bytes == 0 and not sched.waiting


def test_a_plain_message_waits_behind_its_peers_queue_but_takes_no_slot() -> None:
    sched: Scheduler[str] = Scheduler(1, 100)
    assert sched.start("a")
    assert sched.enqueue("a", "async", 1, None, True)
    assert sched.enqueue("a", "plain", 1, None, False)
    assert take_all(sched) == []  # the async one cannot start: the plain one waits behind it
    sched.finished("a")
    assert take_all(sched) == [("async", STARTED), ("plain", INLINE)]
    assert sched.running == 1


def test_queues_are_bounded_per_peer_in_total_and_in_bytes() -> None:
    sched: Scheduler[str] = Scheduler(1, 8, max_queued_bytes=1000)
    assert sched.peer_queue == 2
    assert sched.start("x")
    assert sched.enqueue("a", "a0", 1, None, True) and sched.enqueue("a", "a1", 1, None, True)
    assert not sched.enqueue("a", "a2", 1, None, True)  # a's quarter is full
    for peer in "bcd":
        assert sched.enqueue(peer, peer, 1, None, True)
    assert not sched.enqueue("e", "e", 997, None, True)  # 1000 bytes at most
    assert sched.enqueue("e", "e", 995, None, True)
    assert sched.queued == 6 and sched.queued_bytes == 1000
    for peer in "fg":
        assert sched.enqueue(peer, peer, 0, None, True)
    assert not sched.enqueue("h", "h", 0, None, True)  # eight in total


def test_expired_messages_are_handed_back_not_started() -> None:
    sched: Scheduler[str] = Scheduler(1, 100)
    assert sched.start("x")
    assert sched.enqueue("a", "old", 1, 5.0, True)
    assert sched.enqueue("a", "new", 1, 50.0, True)
    assert sched.enqueue("b", "none", 1, None, True)
    # No slot is free, yet the expired message comes out (it will never start).
    assert sched.take(10.0) == ("old", EXPIRED)
    assert sched.take(10.0) is None
    sched.finished("x")
    assert take_all(sched, 10.0) == [("none", STARTED)]  # b's turn: a had the last one
    sched.finished("b")
    assert take_all(sched, 60.0) == [("new", EXPIRED)]
    assert sched.running == 0


def test_drain_empties_every_queue() -> None:
    sched: Scheduler[str] = Scheduler(1, 100)
    assert sched.start("x")
    for item in ("a0", "a1"):
        sched.enqueue("a", item, 3, None, True)
    sched.enqueue("b", "b0", 3, None, False)
    assert sorted(sched.drain()) == ["a0", "a1", "b0"]
    assert sched.queued == 0 and sched.queued_bytes == 0 and not sched.waiting
    assert sched.take(0.0) is None


def test_a_reserved_slot_goes_to_the_next_light_peer_in_turn() -> None:
    sched: Scheduler[str] = Scheduler(16)  # reserve 2, light 1
    while sched.start("hog"):
        pass
    assert sched.holding("hog") == 14
    assert sched.start("p") and sched.start("q")
    assert sched.enqueue("hog", "hog-next", 1, None, True)
    assert sched.enqueue("r", "r0", 1, None, True)
    sched.finished("p")
    # The hog is first in line but may not take a reserved slot; r may.
    assert take_all(sched) == [("r0", STARTED)]
    sched.finished("hog")
    sched.finished("hog")
    assert take_all(sched) == []  # two free: still the reserve
    sched.finished("hog")
    assert take_all(sched) == [("hog-next", STARTED)]


# -- deadlines of handlers -------------------------------------------------------------------


async def test_within_cancels_at_the_deadline_with_handler_timeout() -> None:
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(HandlerTimeout, match=r"slow took longer than 0\.01s"):
        await within(stuck(), 0.01, "slow")
    assert cancelled.is_set()


async def test_within_lets_a_handlers_own_timeout_error_through() -> None:
    async def own() -> None:
        raise TimeoutError("the database did not answer")

    with pytest.raises(TimeoutError, match="database") as info:
        await within(own(), 5, "h")
    assert not isinstance(info.value, HandlerTimeout)
    assert await within(asyncio.sleep(0, "done"), 5, "h") == "done"


async def test_bounded_uses_the_handlers_timeout_else_the_servers() -> None:
    async def work() -> str:
        return "ok"

    own = entry(lambda m: None, 3.0)
    unlimited = entry(lambda m: None, math.inf)
    default = entry(lambda m: None)
    no_limit = bounded(None)
    for e in (unlimited, default):
        awaitable = work()
        assert no_limit(e, awaitable) is awaitable  # nothing wrapped: no cost
        await awaitable
    wrapped = no_limit(own, work())
    assert asyncio.iscoroutine(wrapped) and await wrapped == "ok"
    server_wide = bounded(2.0)
    awaitable = work()
    assert server_wide(unlimited, awaitable) is awaitable
    await awaitable
    assert await server_wide(default, work()) == "ok"
