"""Settling (contract v2): a server tells a settling peer, exactly once per frame, how the frame
ended (:meth:`Peer.settle`), after the handlers finished and the reply went.

A tiny in-test transport: frames are handed straight to ``server.frame_received`` with a fresh
settling peer each (as a transport with acknowledgement and redelivery would hand them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core.transport import Outcome

HANDLED, FAILED, DROPPED = Outcome.HANDLED, Outcome.FAILED, Outcome.DROPPED
RETURNED = Outcome.RETURNED


class ListLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args))


class Ledger:
    """Everything the peers of one test saw, in order: ``(frame number, what, detail)``."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, Any]] = []
        self.details: dict[int, str | None] = {}
        self._changed = asyncio.Event()

    def record(self, number: int, what: str, detail: Any) -> None:
        self.events.append((number, what, detail))
        self._changed.set()

    def settled(self) -> dict[int, list[Outcome]]:
        """Frame number -> every outcome it was settled with (one each, if all is well)."""
        outcomes: dict[int, list[Outcome]] = {}
        for number, what, detail in self.events:
            if what == "settle":
                outcomes.setdefault(number, []).append(detail)
        return outcomes

    async def wait_until(self, what: str, count: int) -> None:
        """Wait, bounded, until ``count`` events ``what`` (``"settle"``, ``"reply"``) came."""
        while sum(1 for _, seen, _ in self.events if seen == what) < count:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), 5)

    async def wait_settled(self, count: int) -> None:
        """Wait, bounded, until ``count`` frames were settled."""
        await self.wait_until("settle", count)


class SettlingPeer(kit.Peer):
    settles = True

    def __init__(self, ledger: Ledger, number: int, fail_sends: bool = False) -> None:
        super().__init__("127.0.0.1")
        self.ledger = ledger
        self.number = number
        self.fail_sends = fail_sends

    def send(self, data: bytes, reply_to: str) -> None:
        if self.fail_sends:
            raise distro.ConnectionError("the peer is gone")
        self.ledger.record(self.number, "reply", distro.parse(data))

    def settle(self, outcome: Outcome, detail: str | None = None) -> None:
        self.ledger.record(self.number, "settle", outcome)
        self.ledger.details[self.number] = detail


class QuietPeer(SettlingPeer):
    """A peer that does not ask to be settled: its settle() must never be called."""

    settles = False


class FakeListener(kit.Listener):
    address = ("fake", 1)

    async def aclose(self) -> None:
        pass


class FakeTransport(kit.Transport):
    name = "fake"
    api_version = kit.API_VERSION
    capabilities = kit.Capabilities(acknowledgements=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FakeTransport:
        return cls()

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        return FakeListener()

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        raise NotImplementedError


class Feed:
    """Hands frames to a started server, each with its own numbered peer."""

    def __init__(self, server: distro.Server, ledger: Ledger) -> None:
        self.server = server
        self.ledger = ledger
        self.count = 0

    def __call__(
        self,
        uri: str,
        verb: str = "GET",
        *,
        request: bool = False,
        data: bytes | None = None,
        peer: type[SettlingPeer] = SettlingPeer,
        fail_sends: bool = False,
    ) -> int:
        self.count += 1
        headers: dict[str, Any] = {"uri": uri, "verb": verb}
        if request:
            headers["replyTo"] = "back"
        if data is None:
            data = distro.message(headers, self.count).to_bytes()
        self.server.frame_received(data, peer(self.ledger, self.count, fail_sends))
        return self.count


def make_server(**options: Any) -> tuple[distro.Server, Ledger, Feed, ListLogger]:
    logger = ListLogger()
    server = distro.Server(FakeTransport(), logger=logger, **options)
    ledger = Ledger()
    return server, ledger, Feed(server, ledger), logger


def reply_of(ledger: Ledger, number: int) -> distro.Message:
    [reply] = [d for n, what, d in ledger.events if n == number and what == "reply"]
    return reply  # type: ignore[no-any-return]


# -- handled and failed ------------------------------------------------------------------------


async def test_a_plain_handler_settles_handled_once_after_its_reply() -> None:
    server, ledger, feed, _ = make_server()
    server.get("/ok", lambda m: "yes")
    server.post("/quiet", lambda m: None)
    await server.start()
    first = feed("/ok", request=True)
    second = feed("/quiet", "POST")
    # Plain handlers run inline: settled before frame_received returns.
    assert [(n, what) for n, what, _ in ledger.events] == [
        (first, "reply"),
        (first, "settle"),
        (second, "settle"),
    ]
    await server.aclose()
    assert ledger.settled() == {first: [HANDLED], second: [HANDLED]}
    assert reply_of(ledger, first).payload == "yes"


async def test_async_and_late_handlers_settle_handled_after_their_reply() -> None:
    server, ledger, feed, _ = make_server()

    async def later() -> str:
        await asyncio.sleep(0)
        return "late"

    @server.get("/async")
    async def answer(msg: distro.Message) -> str:
        await asyncio.sleep(0)
        return "async"

    server.get("/late", lambda m: later())
    await server.start()
    numbers = [feed("/async", request=True), feed("/late", request=True)]
    await ledger.wait_settled(2)
    await server.aclose()
    assert ledger.settled() == {n: [HANDLED] for n in numbers}
    for number, payload in zip(numbers, ["async", "late"], strict=True):
        assert reply_of(ledger, number).payload == payload
        whats = [what for n, what, _ in ledger.events if n == number]
        assert whats == ["reply", "settle"]


async def raise_later() -> None:
    await asyncio.sleep(0)
    raise ValueError("late failure")


def plain_failure(msg: distro.Message) -> None:
    raise ValueError("plain failure")


async def async_failure(msg: distro.Message) -> None:
    await asyncio.sleep(0)
    raise ValueError("async failure")


@pytest.mark.parametrize(
    "register",
    [
        pytest.param(lambda s: s.get("/x", plain_failure), id="plain"),
        pytest.param(lambda s: s.get("/x", async_failure), id="async"),
        pytest.param(lambda s: s.get("/x", lambda m: raise_later()), id="late"),
        pytest.param(
            lambda s: (s.receive(plain_failure), s.get("/x", lambda m: 1)), id="catch-all"
        ),
        pytest.param(
            lambda s: (s.receive(lambda m: raise_later()), s.get("/x", lambda m: 1)),
            id="late-catch-all",
        ),
    ],
)
async def test_a_handler_that_raises_settles_failed_once(register: Any) -> None:
    server, ledger, feed, _ = make_server()
    register(server)
    await server.start()
    number = feed("/x", request=True)
    await ledger.wait_settled(1)
    await server.aclose()
    assert ledger.settled() == {number: [FAILED]}
    assert ledger.details[number]  # the failure's text, for a dead letter
    assert server.stats.handler_errors == 1
    assert [what for _, what, _ in ledger.events] == ["reply", "settle"]


async def test_a_reply_that_cannot_be_sent_still_settles_once() -> None:
    server, ledger, feed, _ = make_server()
    server.get("/ok", lambda m: "yes")
    await server.start()
    number = feed("/ok", request=True, fail_sends=True)
    await server.aclose()
    assert ledger.settled() == {number: [HANDLED]}
    assert server.stats.dropped == {"reply_failed": 1}


# -- dropped -----------------------------------------------------------------------------------


async def test_an_invalid_frame_settles_dropped() -> None:
    server, ledger, feed, _ = make_server()
    server.receive(lambda m: None)
    await server.start()
    number = feed("/x", data=b"not a message")
    await server.aclose()
    assert ledger.settled() == {number: [DROPPED]}
    assert server.stats.dropped == {"invalid": 1}


async def test_no_route_settles_dropped_after_its_error_reply() -> None:
    server, ledger, feed, _ = make_server()
    server.get("/somewhere", lambda m: None)
    await server.start()
    request = feed("/nowhere", request=True)
    one_way = feed("/nowhere", "POST")
    await server.aclose()
    assert ledger.settled() == {request: [DROPPED], one_way: [DROPPED]}
    assert reply_of(ledger, request).headers["error"] == "no handler for GET /nowhere"
    assert [what for n, what, _ in ledger.events if n == request] == ["reply", "settle"]
    assert server.stats.dropped == {"no_route": 2}


async def test_a_message_only_catch_alls_take_settles_handled() -> None:
    server, ledger, feed, _ = make_server()
    server.receive(lambda m: None)
    await server.start()
    number = feed("/anything", "POST")
    await server.aclose()
    assert ledger.settled() == {number: [HANDLED]}


async def test_overload_backlog_and_close_each_settle_once() -> None:
    server, ledger, feed, logger = make_server(max_concurrency=1, close_timeout=0)
    started = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes: cancelled by aclose

    await server.start()
    running = feed("/slow", "POST")  # takes the only slot: the server pauses
    backlog = [feed("/slow", "POST") for _ in range(4)]  # max_queued (4 * max_concurrency) wait
    overload = feed("/slow", "POST")
    # Overloaded or closing: this server did not take them, another member may (RETURNED).
    assert ledger.settled() == {overload: [RETURNED]}
    assert ledger.details[overload] == "overload"
    await asyncio.wait_for(started.wait(), 5)
    await server.aclose()
    after = feed("/slow", "POST")
    expected = {running: [RETURNED], overload: [RETURNED], after: [RETURNED]}
    expected.update({n: [RETURNED] for n in backlog})
    assert ledger.settled() == expected
    assert ledger.details[running] == ledger.details[after] == "closing"
    assert server.stats.dropped == {"overload": 1, "closing": 5}
    assert any("cancelled 1 handler" in text for level, text in logger.lines)
    assert server.stats.handler_errors == 0


async def test_a_shed_request_is_answered_overloaded_and_settles_returned_once() -> None:
    server, ledger, feed, _ = make_server(max_concurrency=1)
    gate = asyncio.Event()

    @server.get("/slow")
    async def slow(msg: distro.Message) -> str:
        await gate.wait()
        return "done"

    await server.start()
    running = feed("/slow", request=True)
    waiting = [feed("/slow", request=True) for _ in range(4)]  # one queued per peer, four in all
    shed = feed("/slow", request=True)
    assert ledger.settled() == {shed: [RETURNED]}
    assert ledger.details[shed] == "overload"
    assert reply_of(ledger, shed).headers["code"] == "overloaded"
    gate.set()
    await ledger.wait_settled(6)
    await server.aclose()
    assert ledger.settled() == {shed: [RETURNED], **{n: [HANDLED] for n in [running, *waiting]}}


async def test_a_request_that_expired_while_it_waited_settles_dropped_unanswered() -> None:
    server, ledger, feed, _ = make_server(max_concurrency=1)
    gate = asyncio.Event()

    @server.get("/slow")
    async def slow(msg: distro.Message) -> str:
        await gate.wait()
        return "done"

    await server.start()
    running = feed("/slow", request=True)
    headers = {"uri": "/slow", "replyTo": "back", "replyWithin": 1}  # one millisecond
    expired = feed("/slow", data=distro.message(headers).to_bytes())
    await asyncio.sleep(0.01)
    gate.set()
    await ledger.wait_settled(2)
    await server.aclose()
    assert ledger.settled() == {running: [HANDLED], expired: [DROPPED]}
    assert ledger.details[expired] == "expired"
    assert [n for n, what, _ in ledger.events if what == "reply"] == [running]
    assert server.stats.dropped == {"expired": 1}


async def test_a_handler_cancelled_at_its_deadline_settles_failed_with_the_text() -> None:
    server, ledger, feed, _ = make_server(handler_timeout=0.01)

    @server.get("/stuck")
    async def stuck(msg: distro.Message) -> None:
        await asyncio.Event().wait()

    await server.start()
    number = feed("/stuck", request=True)
    await ledger.wait_settled(1)
    await server.aclose()
    assert ledger.settled() == {number: [FAILED]}
    assert "took longer than 0.01s" in str(ledger.details[number])
    assert reply_of(ledger, number).headers["code"] == "handler_timeout"
    assert [what for _, what, _ in ledger.events] == ["reply", "settle"]


async def test_frames_held_in_the_backlog_settle_when_they_are_handled() -> None:
    server, ledger, feed, _ = make_server(max_concurrency=1)
    gate = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        await gate.wait()

    await server.start()
    numbers = [feed("/slow", "POST") for _ in range(4)]
    assert ledger.settled() == {}
    gate.set()
    await ledger.wait_settled(4)
    await server.aclose()
    assert ledger.settled() == {n: [HANDLED] for n in numbers}


async def test_a_plain_message_deferred_behind_an_async_one_settles_once() -> None:
    server, ledger, feed, _ = make_server()
    order: list[str] = []

    @server.post("/async")
    async def first(msg: distro.Message) -> None:
        order.append("async")

    server.post("/plain", lambda m: order.append("plain"))
    await server.start()
    numbers = [feed("/async", "POST"), feed("/plain", "POST")]
    assert ledger.settled() == {}  # the plain one waits for the async one to start
    await ledger.wait_settled(2)
    await server.aclose()
    assert order == ["async", "plain"]
    assert ledger.settled() == {n: [HANDLED] for n in numbers}


# -- peers that do not settle ------------------------------------------------------------------


async def test_a_peer_that_does_not_settle_is_never_told() -> None:
    server, ledger, feed, _ = make_server()
    server.get("/ok", lambda m: "yes")
    server.get("/fail", plain_failure)

    @server.get("/async")
    async def answer(msg: distro.Message) -> str:
        return "async"

    await server.start()
    for uri in ["/ok", "/fail", "/nowhere", "/async"]:
        feed(uri, request=True, peer=QuietPeer)
    feed("/x", data=b"junk", peer=QuietPeer)
    await ledger.wait_until("reply", 4)  # the async reply comes from a task
    await server.aclose()
    assert ledger.settled() == {}
    assert server.stats.handler_errors == 1
    assert server.stats.dropped == {"no_route": 1, "invalid": 1}
