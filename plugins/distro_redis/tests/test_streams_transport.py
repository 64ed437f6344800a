"""redis-streams against a real Redis: naming and trimming, routing from one stream, groups and
fan-out, durability, redelivery, dead letters and re-driving, claims, consumer names, bad
input, requests answered once, options."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import distro_redis
import pytest
import redis
import redis.asyncio as aredis

import distro_core as distro
from distro_core import transport as kit
from distro_core.testing import Recorder, wait_until


def raw(uri: str, verb: str = "POST", payload: Any = None, **headers: Any) -> bytes:
    """A distro message's frame, as another implementation would write it."""
    message = {"id": str(uuid.uuid4()), "headers": {"uri": uri, "verb": verb, **headers}}
    return json.dumps({**message, "payload": payload}, separators=(",", ":")).encode()


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("redis-streams")


@pytest.fixture
def rc(redis_url: str) -> Iterator[redis.Redis]:
    """A plain (blocking) redis-py client, as redis-cli would be: quick calls on loopback."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def stream(prefix: str) -> str:
    return f"{prefix}distro.stream"


def pending(rc: Any, prefix: str, group: str) -> int:
    summary = rc.xpending(stream(prefix), group)
    return int(summary["pending"])


# -- naming, routing, trimming ---------------------------------------------------------------


async def test_a_client_appends_channel_and_frame_to_the_namespace_stream(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    async with factory.client(options) as client:
        sent = distro.message({"uri": "/Customer/7", "verb": "PUT"}, {"total": 1})
        await client.send(sent)
    [(_, fields)] = rc.xrange(stream(prefix))
    assert fields == {b"ch": b"/CUSTOMER/7.PUT", b"msg": sent.to_bytes()}


async def test_a_raw_xadd_reaches_param_routes_and_catch_alls_only_where_they_match(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    routed, everything, other = (factory.server(options) for _ in range(3))
    got, seen, elsewhere = Recorder(), Recorder(), Recorder()
    routed.post("/customer/{id}", got)
    everything.receive(seen)
    other.get("/elsewhere", elsewhere)
    async with routed, everything, other:
        rc.xadd(stream(prefix), {"ch": "/CUSTOMER/7.POST", "msg": raw("/customer/7")})
        rc.xadd(stream(prefix), {"ch": "/ORDERS/1.DELETE", "msg": raw("/orders/1", "DELETE")})
        [msg] = await got.wait_for(1)
        await seen.wait_for(2)
    assert msg.params == {"id": "7"}
    assert [m.uri for m in seen.messages] == ["/customer/7", "/orders/1"]
    assert routed.stats.received == 1 and other.stats.received == 0  # left to others


async def test_the_stream_is_trimmed_to_about_maxlen(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    async with factory.client(options, maxlen=50) as client:
        for n in range(2000):
            await client.send(distro.message({"uri": "/t", "verb": "POST"}, n))
    length = rc.xlen(stream(prefix))
    print(f"2000 sent with maxlen=50: the stream holds {length}")
    assert 50 <= length <= 250  # MAXLEN ~ trims whole nodes (100 entries by default)


# -- groups and fan-out ----------------------------------------------------------------------


async def test_a_group_shares_while_other_groups_and_ungrouped_servers_get_copies(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    a1, a2 = (factory.server(options, group="a") for _ in range(2))
    b, alone = factory.server(options, group="b"), factory.server(options)
    got = {name: Recorder() for name in ("a1", "a2", "b", "alone")}
    for name, server in (("a1", a1), ("a2", a2), ("b", b), ("alone", alone)):
        server.post("/job/{n}", got[name])
    async with a1, a2, b, alone, factory.client(options) as client:
        for n in range(100):
            await client.send(distro.message({"uri": f"/job/{n}", "verb": "POST"}, n))
        await got["b"].wait_for(100)
        await got["alone"].wait_for(100)
        await wait_until(lambda: len(got["a1"].messages) + len(got["a2"].messages) >= 100)
        await asyncio.sleep(0.1)  # a duplicate would show by now
    shared = got["a1"].payloads + got["a2"].payloads
    assert sorted(shared) == list(range(100))  # type: ignore[type-var]
    assert got["b"].payloads == got["alone"].payloads == list(range(100))


async def test_messages_sent_while_no_member_runs_wait_for_the_next_member(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    first = factory.server(options, group="late")
    first.post("/order", lambda m: None)
    async with first:
        pass  # the group exists from now on
    async with factory.client(options) as client:
        for n in range(50):
            await client.send(distro.message({"uri": "/order", "verb": "POST"}, n))
    got = Recorder()
    second = factory.server(options, group="late")
    second.post("/order", got)
    async with second:
        await got.wait_for(50)
    assert got.payloads == list(range(50))


async def test_a_request_waits_in_redis_until_a_member_starts(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    first = factory.server(options, group="answers")
    first.get("/price", lambda m: 1)
    async with first:
        pass  # its route is registered, the group made
    async with factory.client(options) as client:
        asked = asyncio.ensure_future(client.request(distro.message({"uri": "/price"}), 10))
        await asyncio.sleep(0.2)
        assert not asked.done()
        second = factory.server(options, group="answers")
        second.get("/price", lambda m: 2)
        async with second:
            reply = await asyncio.wait_for(asked, 5)
    assert reply.payload == 2


# -- redelivery and dead letters -------------------------------------------------------------


async def test_a_failing_message_becomes_a_dead_letter_that_can_be_redriven(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    group = "dl"
    fixed = False
    attempts: list[int] = []
    other = Recorder()

    def handler(msg: distro.Message) -> None:
        attempts.append(msg.payload)
        if not fixed:
            raise ValueError(f"bad order {msg.payload}")

    server = factory.server(options, group=group, max_deliveries=3, redelivery_delay=0.05)
    server.post("/order", handler)
    watcher = factory.server(options, group="audit")
    watcher.post("/order", other)
    async with server, watcher, factory.client(options) as client:
        await client.send(distro.message({"uri": "/order", "verb": "POST"}, 7))
        await wait_until(lambda: len(attempts) >= 3, what="three deliveries")
        letters: list[kit.DeadLetter] = []

        async def dead() -> bool:
            letters[:] = await distro_redis.dead_letters(group, **options)
            return bool(letters)

        deadline = time.monotonic() + 5
        while not await dead():
            assert time.monotonic() < deadline, "no dead letter"
            await asyncio.sleep(0.02)
        [letter] = letters
        assert letter.group == group and letter.deliveries == 3
        assert letter.error == "ValueError: bad order 7"
        assert json.loads(letter.data)["payload"] == 7
        assert pending(rc, prefix, group) == 0  # acknowledged once dead

        fixed = True
        assert await distro_redis.redrive(group, **options) == 1
        await wait_until(lambda: len(attempts) == 4, what="the re-driven delivery")
        assert await distro_redis.dead_letters(group, **options) == []
        await asyncio.sleep(0.1)
    assert attempts == [7, 7, 7, 7]
    assert other.payloads == [7]  # the other group had its copy once, not again
    assert server.stats.handler_errors == 3


async def test_a_returned_delivery_is_offered_again_without_counting(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    """Through the transport alone: a peer settled RETURNED comes back with the same count,
    one settled FAILED with one more."""
    transport = factory.transport.from_options(
        {**options, "group": "ret", "redelivery_delay": 0.05}
    )
    core = _Core()
    listener = await transport.listen(core)
    try:
        async with factory.client(options) as client:
            await client.send(distro.message({"uri": "/r", "verb": "POST"}, 1))
        await wait_until(lambda: len(core.peers) == 1)
        core.peers[0].settle(kit.Outcome.RETURNED, "closing")
        await wait_until(lambda: len(core.peers) == 2, what="the returned entry")
        core.peers[1].settle(kit.Outcome.FAILED, "ValueError: no")
        await wait_until(lambda: len(core.peers) == 3, what="the failed entry")
        core.peers[2].settle(kit.Outcome.HANDLED)
    finally:
        await listener.aclose()
    counts = [p.deliveries for p in core.peers]  # type: ignore[attr-defined]
    assert counts == [1, 1, 2]


class _Core:
    """A stand-in for the server: records frames and peers; a catch-all (takes everything)."""

    routes: tuple[kit.RouteInfo, ...] = ()
    has_catch_all = True

    def __init__(self) -> None:
        self.peers: list[kit.Peer] = []
        self.dropped: list[tuple[str, str]] = []

    def frame_received(self, data: bytes, peer: kit.Peer) -> None:
        self.peers.append(peer)

    def frame_dropped(self, reason: str, detail: str) -> None:
        self.dropped.append((reason, detail))


# -- claims and consumer names ---------------------------------------------------------------


async def test_entries_a_dead_member_held_are_claimed_after_claim_after(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    got = Recorder()
    server = factory.server(options, group="claims", claim_after=0.3)
    server.post("/job", got)
    async with server:
        pass  # make the group
    for n in range(5):
        rc.xadd(stream(prefix), {"ch": "/JOB.POST", "msg": raw("/job", payload=n)})
    # A member that read them and died (kill -9): they are pending for it.
    rc.xreadgroup("claims", "ghost", {stream(prefix): ">"})
    started = time.monotonic()
    server = factory.server(options, group="claims", claim_after=0.3)
    server.post("/job", got)
    async with server:
        await got.wait_for(5)
    took = time.monotonic() - started
    print(f"5 entries of a dead member claimed after {took:.2f}s (claim_after=0.3)")
    assert sorted(got.payloads) == list(range(5))  # type: ignore[type-var]
    assert took >= 0.3


async def test_a_live_member_keeps_what_it_is_still_handling(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    """Handlers slower than claim_after, at max_concurrency (so the core has paused reading):
    the member refreshes both entries, the one running and the one waiting behind it, and the
    other member claims neither."""
    handled: list[str] = []
    started = asyncio.Event()

    async def slow(msg: distro.Message) -> None:
        started.set()
        await asyncio.sleep(0.8)  # well over claim_after
        handled.append(f"busy {msg.payload}")

    busy = factory.server(options, group="keep", claim_after=0.3, max_concurrency=1)
    busy.post("/slow", slow)
    other = factory.server(options, group="keep", claim_after=0.3)
    other.post("/slow", lambda m: handled.append(f"other {m.payload}"))
    async with busy:
        async with factory.client(options) as client:
            for n in range(2):
                await client.send(distro.message({"uri": "/slow", "verb": "POST"}, n))
        await asyncio.wait_for(started.wait(), 5)
        async with other:
            await wait_until(lambda: len(handled) >= 2, timeout=5, what=f"two in {handled}")
            await asyncio.sleep(0.5)
    assert handled == ["busy 0", "busy 1"]


async def test_a_restarted_member_reads_its_own_pending_entries_first(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    member = factory.server(options, group="own", consumer="member-1")
    member.post("/job", lambda m: None)
    async with member:
        pass
    for n in range(3):
        rc.xadd(stream(prefix), {"ch": "/JOB.POST", "msg": raw("/job", payload=n)})
    # Its previous life read them and was killed before acknowledging.
    rc.xreadgroup("own", "member-1", {stream(prefix): ">"})
    got = Recorder()
    restarted = factory.server(options, group="own", consumer="member-1", claim_after=60)
    restarted.post("/job", got)
    started = time.monotonic()
    async with restarted:
        await got.wait_for(3)
    assert time.monotonic() - started < 2  # at once, not after claim_after
    assert got.payloads == [0, 1, 2]


async def test_the_default_consumer_name_is_the_host_and_the_claimed_port(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    port = 20000 + uuid.uuid4().int % 40000
    server = factory.server(options, group="names", port=port)
    server.post("/x", lambda m: None)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/x", "verb": "POST"}))
        await wait_until(lambda: server.stats.handled == 1)
    [consumer] = rc.xinfo_consumers(stream(prefix), "names")
    assert consumer["name"] == f"{socket.gethostname()}:{port}".encode()


async def test_a_group_whose_stream_disappeared_is_made_again(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    got = Recorder()
    server = factory.server(options, group="again")
    server.post("/x", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/x", "verb": "POST"}, 1))
        await got.wait_for(1)
        rc.delete(stream(prefix))  # as a Redis restart without persistence does

        async def until_heard() -> None:
            n = 1
            while len(got.messages) < 2:
                n += 1
                await client.send(distro.message({"uri": "/x", "verb": "POST"}, n))
                await asyncio.sleep(0.2)

        await asyncio.wait_for(until_heard(), 10)
    assert got.payloads[0] == 1


# -- bad input -------------------------------------------------------------------------------


async def test_entries_that_are_not_messages_are_dropped_counted_and_acknowledged(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    got = Recorder()
    server = factory.server(options, group="bad")
    server.post("/in", got)
    async with server:
        rc.xadd(stream(prefix), {"hello": "world"})
        rc.xadd(stream(prefix), {"ch": "/IN.POST", "msg": b"\xff{not json"})
        rc.xadd(stream(prefix), {"ch": "/IN.POST", "msg": raw("/in", payload="fine")})
        await got.wait_for(1)
        await wait_until(lambda: server.stats.dropped.get("invalid") == 2, what="2 invalid")
        deadline = time.monotonic() + 5
        while pending(rc, prefix, "bad"):
            assert time.monotonic() < deadline, "bad entries were left pending"
            await asyncio.sleep(0.02)
    assert got.payloads == ["fine"]


# -- request/reply ---------------------------------------------------------------------------


async def test_a_request_delivered_twice_is_answered_once(
    factory: distro.Factory, options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    """The first delivery fails: its error reply answers the request. The redelivery runs the
    handler again, and its reply is not sent (the group answered that entry already)."""
    calls: list[int] = []

    def flaky(msg: distro.Message) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try")
        return "second"

    server = factory.server(options, group="once", redelivery_delay=0.05)
    server.get("/q", flaky)
    listener = aredis.Redis.from_url(redis_url).pubsub()
    await listener.psubscribe(f"{prefix}distro.reply.*")
    assert await listener.get_message(timeout=2)  # the confirmation: subscribed from here
    try:
        async with server, factory.client(options) as client:
            with pytest.raises(distro.RemoteError, match="internal error"):  # "first try": logged
                await client.request(distro.message({"uri": "/q"}), timeout=5)
            await wait_until(lambda: len(calls) == 2, what="the redelivery")
            await asyncio.sleep(0.2)
            replies = []
            while item := await listener.get_message(ignore_subscribe_messages=True, timeout=0.1):
                replies.append(item)
    finally:
        await listener.aclose()
    assert len(replies) == 1


async def test_a_request_no_server_has_a_route_for_fails_at_once(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    async with factory.client(options) as client:
        started = time.monotonic()
        with pytest.raises(distro.RemoteError, match="registered a route"):
            await client.request(distro.message({"uri": "/nobody"}), timeout=5)
    assert time.monotonic() - started < 2


# -- options ---------------------------------------------------------------------------------


def test_options_are_checked_when_the_server_or_client_is_made(factory: distro.Factory) -> None:
    for bad, name in (
        ({"maxlen": 0}, "maxlen"),
        ({"max_deliveries": 0}, "max_deliveries"),
        ({"redelivery_delay": -1}, "redelivery_delay"),
        ({"claim_after": 0}, "claim_after"),
        ({"batch": 0}, "batch"),
        ({"reply_window": "long"}, "reply_window"),
        ({"consumer": "distro.retry"}, "consumer"),
        ({"consumer": 5}, "consumer"),
    ):
        with pytest.raises(ValueError, match=name):
            factory.server(bad)
    with pytest.raises(TypeError, match="colour"):
        factory.client(colour="red")
    with pytest.raises(ValueError, match="group"):
        factory.server(group="")
    assert "group=g" in factory.server(group="g").transport.describe()


async def test_messages_a_closing_member_did_not_take_go_to_another_member(
    factory: distro.Factory, options: dict[str, Any]
) -> None:
    """Frames behind a busy handler when a member closes are returned, not lost: another
    member of the group handles them (after redelivery_delay), and none is counted a failure."""
    release = asyncio.Event()
    first: list[int] = []
    other = Recorder()
    closing = factory.server(
        options, group="handover", max_concurrency=1, close_timeout=2, redelivery_delay=0.1
    )

    @closing.post("/job")
    async def slow(msg: distro.Message) -> None:
        first.append(msg.payload)
        await release.wait()

    await closing.start()
    try:
        async with factory.client(options) as client:
            for n in range(20):
                await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
        await wait_until(lambda: len(first) == 1, what="the first job")
        await asyncio.sleep(0.2)  # the rest read and waiting behind it
        closed = asyncio.ensure_future(closing.aclose())
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(closed, 5)
    finally:
        await closing.aclose()
    taker = factory.server(options, group="handover", redelivery_delay=0.1)
    taker.post("/job", other)
    async with taker:
        await other.wait_for(19)
        await asyncio.sleep(0.2)
    print(f"closing member handled {first}, returned {closing.stats.dropped}; the other "
          f"member handled {len(other.messages)}")  # fmt: skip
    assert sorted(first + other.payloads) == list(range(20))  # type: ignore[operator]
    assert closing.stats.handler_errors == 0
