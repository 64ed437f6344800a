"""Confirmed sends over redis-streams mean "stored": ``client.send(msg, confirm=True)`` returns
once Redis answered the XADD with the entry's id, whether or not a member runs; a refused XADD
raises ``TransportError``, a link that broke before Redis answered ``ConnectionError``, no
answer within ``timeout`` ``RequestTimeout``. Against a real Redis (the shared one, or one of
the test's own where the test pauses or starves it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _redis_servers import RedisProcess

import distro_core as distro
from distro_core.testing import Recorder


def order(n: Any = None) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, n)


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("redis-streams")


@pytest.fixture
def rc(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def own(own_redis: RedisProcess) -> Iterator[redis.Redis]:
    """A blocking client of the test's own Redis (to pause or starve it)."""
    client = redis.Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        client.close()


def stream(prefix: str) -> str:
    return f"{prefix}distro.stream"


async def test_a_confirmed_send_returns_once_stored_with_no_server_running(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    """No server has ever run on this prefix: each confirmed send returns (Redis stored it),
    the frame in the stream is the plain message (no replyTo, no confirm header), and a group
    member that starts later handles all of them, in order."""
    async with factory.client(options) as client:
        for n in range(20):
            await client.send(order(n), confirm=True, timeout=5)
            assert rc.xlen(stream(prefix)) == n + 1, "returned before Redis stored it"
        stats = client.stats
    assert (stats.sent, stats.confirmed, stats.requests) == (20, 20, 0)
    (_, fields), *_ = rc.xrange(stream(prefix), count=1)
    frame = distro.parse(fields[b"msg"])
    assert "replyTo" not in frame.headers and "confirm" not in frame.headers
    got = Recorder()
    member = factory.server(options, group="late")
    member.post("/order", got)
    async with member:
        await got.wait_for(20)
    assert got.payloads == list(range(20))


async def test_many_confirmed_sends_in_flight_are_each_stored_once(
    factory: distro.Factory, options: dict[str, Any], rc: Any, prefix: str
) -> None:
    """2,000 confirmed sends, 64 at a time: every one returns, the stream holds 2,000 entries
    (each XADD answered by its own id, however Redis's replies are cut into reads)."""
    async with factory.client(options) as client:
        sem = asyncio.Semaphore(64)

        async def one(n: int) -> None:
            async with sem:
                await client.send(order(n), confirm=True, timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(2000)))
        took = time.perf_counter() - started
        stats = client.stats
    print(f"\nredis-streams: 2,000 confirmed sends, 64 in flight: {2000 / took:,.0f}/s")
    assert stats.confirmed == stats.sent == 2000
    assert rc.xlen(stream(prefix)) == 2000


async def test_a_refused_store_raises_transport_error_and_the_client_goes_on(
    factory: distro.Factory, own_redis: RedisProcess, own: Any, prefix: str
) -> None:
    """A Redis at its ``maxmemory`` with ``noeviction`` refuses the XADD (OOM): the confirmed
    send raises ``TransportError`` with Redis's text (not ``ConnectionError``: the link is
    fine); once Redis has room again the next one is stored."""
    options = {"url": own_redis.url, "prefix": prefix}
    async with factory.client(options) as client:
        own.config_set("maxmemory-policy", "noeviction")
        own.config_set("maxmemory", "1")
        try:
            with pytest.raises(distro.TransportError, match="OOM") as refused:
                await client.send(order(1), confirm=True, timeout=5)
            assert not isinstance(refused.value, distro.ConnectionError)
        finally:
            own.config_set("maxmemory", "0")
        await client.send(order(2), confirm=True, timeout=5)
        stats = client.stats
    assert own.xlen(stream(prefix)) == 1
    assert stats.confirmed == 1


async def test_no_answer_within_the_timeout_is_request_timeout(
    factory: distro.Factory, own_redis: RedisProcess, own: Any, prefix: str
) -> None:
    """Redis holds write commands (CLIENT PAUSE WRITE): the confirmed send raises
    ``RequestTimeout`` after its timeout. A timed-out store may still be stored: here it is,
    once the pause ends."""
    options = {"url": own_redis.url, "prefix": prefix}
    async with factory.client(options) as client:
        own.execute_command("CLIENT", "PAUSE", "3000", "WRITE")
        try:
            started = time.monotonic()
            with pytest.raises(distro.RequestTimeout):
                await client.send(order(1), confirm=True, timeout=0.3)
            took = time.monotonic() - started
        finally:
            own.execute_command("CLIENT", "UNPAUSE")
        await client.send(order(2), confirm=True, timeout=5)
        stats = client.stats
    assert 0.25 < took < 2.0
    assert own.xlen(stream(prefix)) == 2
    assert stats.confirmed == 1


async def test_a_link_broken_before_redis_answered_is_connection_error(
    factory: distro.Factory, own_redis: RedisProcess, own: Any, prefix: str
) -> None:
    """The client's XADD link is killed while Redis holds its XADD unanswered: the confirmed
    send raises ``ConnectionError`` at once (not at its timeout); the next one reconnects and
    is stored."""
    options = {"url": own_redis.url, "prefix": prefix}
    async with factory.client(options) as client:
        own.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
        try:
            sending = asyncio.ensure_future(client.send(order(1), confirm=True, timeout=10))
            deadline = time.monotonic() + 5
            killed = 0
            while not killed and time.monotonic() < deadline:
                # the XADD link is the client connection whose last command is xadd
                for entry in own.client_list():
                    if entry.get("cmd") == "xadd":
                        killed += own.client_kill_filter(_id=entry["id"])
                if not killed:
                    await asyncio.sleep(0.01)
            assert killed == 1
            started = time.monotonic()
            with pytest.raises(distro.ConnectionError, match="before Redis answered"):
                await asyncio.wait_for(sending, 5)
            assert time.monotonic() - started < 2.0
        finally:
            own.execute_command("CLIENT", "UNPAUSE")
        await client.send(order(2), confirm=True, timeout=5)
        stats = client.stats
    assert [distro.parse(f[b"msg"]).payload for _, f in own.xrange(stream(prefix))] == [2]
    assert stats.confirmed == 1


async def test_a_confirmed_send_to_an_unreachable_redis_is_connection_error(
    factory: distro.Factory, own_redis: RedisProcess, prefix: str
) -> None:
    options = {"url": own_redis.url, "prefix": prefix, "connect_timeout": 0.5}
    async with factory.client(options) as client:
        own_redis.stop()
        with pytest.raises(distro.ConnectionError):
            await client.send(order(1), confirm=True, timeout=5)
        assert client.stats.confirmed == 0
