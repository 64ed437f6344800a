"""Fair share between peers and load shedding, through a real server over tcp and udp4 (issue 9,
defect 5): one client's slow requests must not starve the others, and what a server cannot take
is answered ``overloaded`` at once instead of waiting for the caller's time-out.

Run with ``-s`` to see the latency figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core.testing import Recorder, wait_until

TRANSPORTS = ["tcp", "udp4"]


@asynccontextmanager
async def clients(
    factory: distro.Factory, server: distro.Server, count: int
) -> AsyncIterator[list[distro.Client]]:
    """``count`` open clients of ``server``, closed afterwards."""
    host, port = server.address
    opened = [factory.client(address=host, port=port) for _ in range(count)]
    for client in opened:
        await client.open()
    try:
        yield opened
    finally:
        for client in opened:
            await client.aclose()


class Slow:
    """A ``/slow`` handler that waits until :attr:`release` is set, counting its runs."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def __call__(self, msg: distro.Message) -> str:
        self.started += 1
        await self.release.wait()
        return "done"


def slow_server(factory: distro.Factory, **options: Any) -> tuple[distro.Server, Slow]:
    """A server with a :class:`Slow` ``/slow`` handler."""
    server = factory.server(port=0, **options)
    slow = Slow()
    server.get("/slow", slow)
    return server, slow


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


@pytest.mark.parametrize("ping", ["async", "plain"])
@pytest.mark.parametrize("name", TRANSPORTS)
async def test_one_client_with_400_slow_requests_does_not_starve_20_others(
    name: str, ping: str
) -> None:
    # The old server paused reading for everybody once max_concurrency (256) async handlers
    # ran: a ping from anyone else then waited until the slow requests finished (4.7 s was
    # measured; here they never finish while the pings run, so they timed out).
    factory = distro.create(name)
    server, slow = slow_server(factory)
    if ping == "async":

        @server.get("/ping")
        async def pong(msg: distro.Message) -> str:
            return "pong"

    else:
        server.get("/ping", lambda msg: "pong")
    latencies: list[float] = []
    async with server, clients(factory, server, 1) as [hog], clients(factory, server, 20) as others:
        outstanding = [
            asyncio.ensure_future(hog.request(distro.message({"uri": "/slow"}), timeout=30))
            for _ in range(400)
        ]
        await wait_until(lambda: slow.started >= 224, what="the slow requests to start")

        async def pinger(client: distro.Client) -> None:
            for _ in range(100):
                began = time.perf_counter()
                reply = await client.request(distro.message({"uri": "/ping"}), timeout=2)
                latencies.append(time.perf_counter() - began)
                assert reply.payload == "pong"

        await asyncio.gather(*(pinger(client) for client in others))
        assert not any(request.done() for request in outstanding)  # all 400 still waiting
        assert server.stats.received == 400 + 2000
        slow.release.set()
        replies = await asyncio.wait_for(asyncio.gather(*outstanding), 30)
    assert [reply.payload for reply in replies] == ["done"] * 400
    assert server.stats.dropped == {}
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"\n{name}, {ping} /ping, 400 slow requests outstanding: 20 x 100 pings, "
        f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms"
    )
    assert len(latencies) == 2000
    assert p99 < 0.050


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_requests_past_a_peers_share_and_queue_are_answered_overloaded_at_once(
    name: str,
) -> None:
    factory = distro.create(name)
    server, slow = slow_server(factory)
    async with server, clients(factory, server, 1) as [hog]:
        began = time.perf_counter()
        requests = [
            asyncio.ensure_future(hog.request(distro.message({"uri": "/slow"}), timeout=30))
            for _ in range(1000)
        ]
        # 224 run (seven eighths of 256 slots), 256 wait (a quarter of 1,024): 520 are shed.
        await wait_until(
            lambda: sum(1 for r in requests if r.done()) == 520, what="the shed requests"
        )
        shed_within = time.perf_counter() - began
        errors = [r.exception() for r in requests if r.done()]
        assert all(isinstance(e, distro.RemoteError) for e in errors)
        assert {e.code for e in errors if isinstance(e, distro.RemoteError)} == {"overloaded"}
        assert server.stats.dropped == {"overload": 520}
        slow.release.set()
        done = await asyncio.wait_for(asyncio.gather(*(r for r in requests if not r.done())), 30)
    assert len(done) == 480 and {reply.payload for reply in done} == {"done"}
    print(f"\n{name}: 520 of 1,000 requests answered 'overloaded' within {shed_within:.3f} s")
    assert shed_within < 5


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_peers_messages_start_in_arrival_order_behind_its_queue(name: str) -> None:
    # A plain message must not overtake the same peer's async ones waiting for a slot.
    factory = distro.create(name)
    server = factory.server(port=0, max_concurrency=1)
    order = Recorder()
    gate = asyncio.Event()

    @server.post("/async")
    async def first(msg: distro.Message) -> None:
        order(msg)
        await gate.wait()

    server.post("/plain", order)
    async with server, clients(factory, server, 1) as [client]:
        for n in range(3):
            await client.send(distro.message({"uri": "/async", "verb": "POST"}, n))
            await client.send(distro.message({"uri": "/plain", "verb": "POST"}, n))
        await order.wait_for(1)
        gate.set()
        messages = await order.wait_for(6)
    if factory.transport.capabilities.ordered:
        assert [(m.uri, m.payload) for m in messages] == [
            (uri, n) for n in range(3) for uri in ("/async", "/plain")
        ]
    else:
        assert sorted(m.payload for m in messages) == [0, 0, 1, 1, 2, 2]  # type: ignore[type-var]


class FeedPeer(kit.Peer):
    """A peer of the in-test transport: keeps the replies it is sent."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1")
        self.replies: list[distro.Message] = []

    def send(self, data: bytes, reply_to: str) -> None:
        self.replies.append(distro.parse(data))


class FeedListener(kit.Listener):
    address = ("feed", 1)

    async def aclose(self) -> None:
        pass


class FeedTransport(kit.Transport):
    """Frames are handed to ``server.frame_received`` by the test itself, whatever the server
    says about pausing: like a burst a transport read before the pause."""

    name = "feed"
    api_version = kit.API_VERSION
    capabilities = kit.Capabilities(acknowledgements=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FeedTransport:
        return cls()

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        return FeedListener()

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        raise NotImplementedError


def frame(payload: object, uri: str = "/job") -> bytes:
    return distro.message({"uri": uri, "verb": "POST", "replyTo": "feed"}, payload).to_bytes()


async def test_turns_go_round_the_peers_with_queued_messages() -> None:
    # One slot: when it frees, each waiting peer gets one message in turn, however many the
    # first one queued.
    server = distro.Server(
        FeedTransport(), logger=logging.getLogger("test"), max_concurrency=1, max_queued=40
    )
    started: list[str] = []
    gate = asyncio.Event()

    @server.post("/job")
    async def job(msg: distro.Message) -> None:
        started.append(msg.payload)
        await gate.wait()

    first, a, b = FeedPeer(), FeedPeer(), FeedPeer()
    async with server:
        server.frame_received(frame("first"), first)
        for n in range(4):
            server.frame_received(frame(f"a{n}"), a)
        for n in range(2):
            server.frame_received(frame(f"b{n}"), b)
        gate.set()
        await wait_until(lambda: len(started) == 7)
        await wait_until(lambda: server.stats.replies_sent == 7)
    assert started == ["first", "a0", "b0", "a1", "b1", "a2", "a3"]


async def test_with_every_slot_taken_plain_messages_still_run_and_only_full_queues_shed() -> None:
    server = distro.Server(FeedTransport(), logger=logging.getLogger("test"), max_concurrency=1)
    gate = asyncio.Event()

    @server.post("/job")
    async def job(msg: distro.Message) -> str:
        await gate.wait()
        return "done"

    server.post("/ping", lambda msg: "pong")
    hog, other = FeedPeer(), FeedPeer()
    async with server:
        for n in range(3):  # one runs, one waits (a quarter of max_queued=4), one is shed
            server.frame_received(frame(n), hog)
        await asyncio.sleep(0)  # the first one's task starts
        server.frame_received(frame("ping", "/ping"), other)
        assert [m.payload for m in other.replies] == ["pong"]  # inline, at once
        [shed] = hog.replies
        assert shed.headers["code"] == "overloaded" and shed.payload is None
        assert server.stats.dropped == {"overload": 1}
        gate.set()
        await wait_until(lambda: len(hog.replies) == 3)
    assert [m.payload for m in hog.replies[1:]] == ["done", "done"]


class BusTransport(FeedTransport):
    """As :class:`FeedTransport`, but pub/sub: other servers may hear the same requests."""

    name = "bus"
    capabilities = kit.Capabilities(acknowledgements=False, fan_out=True)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BusTransport:
        return cls()


async def test_over_pub_sub_a_server_that_sheds_does_not_answer_for_the_others() -> None:
    # Another server on the bus may take the request: an 'overloaded' reply from this one
    # would be the caller's answer. It is counted and settled RETURNED, not answered.
    server = distro.Server(BusTransport(), logger=logging.getLogger("test"), max_concurrency=1)
    gate = asyncio.Event()

    @server.post("/job")
    async def job(msg: distro.Message) -> str:
        await gate.wait()
        return "done"

    bus = FeedPeer()  # over pub/sub one peer stands for every sender
    async with server:
        for n in range(6):  # one runs, four wait (the bus has the whole queue), one is shed
            server.frame_received(frame(n), bus)
        assert server.stats.dropped == {"overload": 1}
        assert bus.replies == []
        gate.set()
        await wait_until(lambda: len(bus.replies) == 5)
    assert {m.payload for m in bus.replies} == {"done"}
