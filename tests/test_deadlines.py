"""Deadlines (issue 9, "Handler deadlines"): a server's ``handler_timeout`` and a route's
``timeout=`` cancel an async handler that runs too long, and the caller's own deadline, carried
in the request's ``replyWithin`` header, keeps a request that waited too long in the server's
queues from starting at all."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest

import distro_core as distro
from distro_core import _protocol
from distro_core.testing import Recorder, wait_until


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("memory")


class Stuck:
    """An async handler that never finishes on its own; records its cancellation."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, msg: distro.Message) -> str:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "never"


async def ask(
    factory: distro.Factory, server: distro.Server, uri: str, timeout: float = 5
) -> distro.Message:
    async with factory.client(port=server.address[1]) as client:
        return await client.request(distro.message({"uri": uri}), timeout=timeout)


# -- handler deadlines ---------------------------------------------------------------------------


async def test_a_handler_past_the_servers_handler_timeout_is_cancelled_and_answered(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0, handler_timeout=0.05)
    stuck = Stuck()
    server.get("/stuck", stuck)
    server.get("/ok", lambda msg: "fine")
    async with server:
        began = time.monotonic()
        with pytest.raises(distro.RemoteError) as info:
            await ask(factory, server, "/stuck")
        took = time.monotonic() - began
        assert (await ask(factory, server, "/ok")).payload == "fine"
    assert stuck.cancelled.is_set()
    assert info.value.code == "handler_timeout"
    assert "took longer than 0.05s" in info.value.remote
    assert 0.05 <= took < 2
    stats = server.stats
    assert (stats.handler_timeouts, stats.handler_errors, stats.handled) == (1, 0, 2)


async def test_a_routes_timeout_wins_over_the_servers(factory: distro.Factory) -> None:
    server = factory.server(port=0, handler_timeout=30)
    quick, unlimited = Stuck(), Stuck()
    server.get("/quick", quick, timeout=0.05)

    @server.get("/patient", timeout=math.inf)
    async def patient(msg: distro.Message) -> str:
        await asyncio.sleep(0.1)
        return "waited"

    short = factory.server(port=0, handler_timeout=0.02)
    short.get("/patient", patient, timeout=math.inf)
    short.get("/unlimited", unlimited)
    async with server, short:
        with pytest.raises(distro.RemoteError, match=r"took longer than 0\.05s"):
            await ask(factory, server, "/quick")
        assert (await ask(factory, short, "/patient")).payload == "waited"
        with pytest.raises(distro.RemoteError) as info:
            await ask(factory, short, "/unlimited")
    assert info.value.code == "handler_timeout"
    assert quick.cancelled.is_set() and unlimited.cancelled.is_set()


async def test_every_way_of_registering_takes_a_timeout(factory: distro.Factory) -> None:
    server = factory.server(port=0)
    for register in (
        lambda h: server.post("/a", h, timeout=0.02),
        lambda h: server.post("/b", timeout=0.02)(h),
        lambda h: server.route("POST", "/c", h, timeout=0.02),
        lambda h: server.route("POST", "/d", timeout=0.02)(h),
    ):
        register(Stuck())
    watcher = Stuck()
    server.receive(watcher, timeout=0.02)
    server.post("/e", lambda msg: "answered")
    async with server, factory.client(port=server.address[1]) as client:
        for uri in "abcd":
            with pytest.raises(distro.RemoteError) as info:
                await client.request(distro.message({"uri": f"/{uri}", "verb": "POST"}), 5)
            assert info.value.code == "handler_timeout", uri
        # A catch-all that runs too long is cancelled; it never answers, the route does.
        reply = await client.request(distro.message({"uri": "/e", "verb": "POST"}), 5)
    assert reply.payload == "answered"
    assert server.stats.handler_timeouts == 4 + 5  # the catch-all ran for all five


async def test_an_awaitable_a_plain_handler_returns_is_bounded_too(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0, handler_timeout=0.05)
    server.get("/late", lambda msg: asyncio.Event().wait())
    async with server:
        with pytest.raises(distro.RemoteError) as info:
            await ask(factory, server, "/late")
    assert info.value.code == "handler_timeout"


async def test_a_plain_handler_is_not_interrupted(factory: distro.Factory) -> None:
    # Plain handlers run inline on the loop; nothing can cut them short (documented).
    server = factory.server(port=0, handler_timeout=0.01)
    server.get("/busy", lambda msg: time.sleep(0.05) or "finished")
    async with server:
        assert (await ask(factory, server, "/busy")).payload == "finished"
    assert server.stats.handler_timeouts == 0


async def test_a_handlers_own_timeout_error_is_a_handler_error(factory: distro.Factory) -> None:
    server = factory.server(port=0, handler_timeout=5, expose_errors=True)

    @server.get("/own")
    async def own(msg: distro.Message) -> None:
        raise TimeoutError("the database did not answer")

    async with server:
        with pytest.raises(distro.RemoteError) as info:
            await ask(factory, server, "/own")
    assert info.value.code == "handler_error"
    assert info.value.remote == "TimeoutError: the database did not answer"  # exposed
    assert (server.stats.handler_errors, server.stats.handler_timeouts) == (1, 0)


@pytest.mark.parametrize("bad", ["1", True, None])
def test_a_timeout_must_be_a_number(factory: distro.Factory, bad: Any) -> None:
    server = factory.server(port=0)
    if bad is None:
        server.get("/fine", lambda m: None, timeout=None)  # None: the server's
        return
    with pytest.raises(TypeError, match="timeout"):
        server.get("/x", lambda m: None, timeout=bad)
    with pytest.raises(TypeError, match="handler_timeout"):
        factory.server(port=0, handler_timeout=bad)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), -math.inf])
def test_a_timeout_must_be_positive(factory: distro.Factory, bad: float) -> None:
    server = factory.server(port=0)
    with pytest.raises(ValueError, match="timeout"):
        server.get("/x", lambda m: None, timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        server.get("/x", timeout=bad)
    with pytest.raises(ValueError, match="handler_timeout"):
        factory.server(port=0, handler_timeout=bad)
    assert server.routes == ()


# -- the caller's deadline -----------------------------------------------------------------------


class RawReceiver:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def frame_received(self, data: bytes) -> None:
        self.frames.append(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def request_failed(self, request_id: str, failure: Any, detail: str) -> None:
        pass


async def test_a_request_carries_its_callers_deadline_in_milliseconds(
    factory: distro.Factory,
) -> None:
    seen = Recorder()
    server = factory.server(port=0)
    server.receive(seen)
    async with server, factory.client(port=server.address[1]) as client:
        for timeout in (2.5, 0.0001, 7):
            with pytest.raises(distro.RemoteError):  # nothing answers: no handler
                await client.request(distro.message({"uri": "/x", "replyWithin": 1}), timeout)
    assert [m.headers["replyWithin"] for m in seen.messages] == [2500, 1, 7000]
    data = _protocol.as_request(distro.message({"uri": "/x"}), "r", 1.5)
    assert json.loads(data)["headers"] == {"uri": "/x", "replyTo": "r", "replyWithin": 1500}
    assert b"replyWithin" not in _protocol.as_request(distro.message({"uri": "/x"}), "r")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(2500, 2.5), (0.5, 0.0005), (0, None), (-5, None), ("100", None), (True, None), (None, None)],
)
def test_reply_within_reads_only_positive_numbers(value: Any, seconds: float | None) -> None:
    headers = {"uri": "/x"} if value is None else {"uri": "/x", "replyWithin": value}
    assert _protocol.reply_within(headers) == seconds
    assert _protocol.reply_within({"uri": "/x", "replyWithin": 1e308}) == pytest.approx(1e305)


async def test_a_request_whose_caller_gave_up_while_it_waited_is_not_started() -> None:
    # 16 slots: a hog's handlers take 14 (the last two are the reserve), another client takes
    # one of the reserve; its second request waits in its queue and its caller gives up.
    factory = distro.create("tcp")
    server = factory.server(port=0, max_concurrency=16, close_timeout=0.1)
    server.get("/hog", Stuck())
    release = asyncio.Event()
    started = Recorder()

    @server.get("/first")
    async def first(msg: distro.Message) -> str:
        started(msg)
        await release.wait()
        return "first"

    @server.get("/second")
    async def second(msg: distro.Message) -> str:
        started(msg)
        return "second"

    async with server:
        host, port = server.address
        async with (
            factory.client(address=host, port=port) as hog,
            factory.client(address=host, port=port) as other,
        ):
            hogging = [
                asyncio.ensure_future(hog.request(distro.message({"uri": "/hog"}), 30))
                for _ in range(14)
            ]
            await wait_until(lambda: server.stats.received == 14)
            waiting = asyncio.ensure_future(other.request(distro.message({"uri": "/first"}), 30))
            await started.wait_for(1)
            with pytest.raises(distro.RequestTimeout):
                await other.request(distro.message({"uri": "/second"}), timeout=0.1)
            assert server.stats.received == 16
            # Free the slot: the queued request's turn comes after its caller's deadline.
            release.set()
            assert (await waiting).payload == "first"
            await wait_until(lambda: server.stats.dropped.get("expired") == 1)
    assert all(task.done() for task in hogging)  # failed when the hog's client closed
    assert [m.uri for m in started.messages] == ["/first"]  # the second never started
    assert server.stats.replies_sent == 1
