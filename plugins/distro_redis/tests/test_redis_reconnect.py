"""Redis restarts: a server resubscribes by itself; a client's send fails with a clear, quick
ConnectionError while Redis is down and works again once it is back.

Each test runs its own redis-server on a free port and stops and restarts it; the shared Redis
on 6379 is never touched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from _redis_servers import RedisProcess

import distro_core as distro
from distro_core.testing import Recorder


async def send_until_refused(client: distro.Client, limit: float = 5.0) -> float:
    """Send until a send raises ConnectionError; return how long that send took.

    A send just after Redis died may still be written into the socket before the loss is
    seen (TCP cannot tell); the next one must fail.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            await client.send(distro.message({"uri": "/down", "verb": "POST"}))
        except distro.ConnectionError:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"sends still succeeded {limit}s after Redis stopped")


async def resend_until_heard(client: distro.Client, got: Recorder, limit: float = 10.0) -> int:
    """Send numbered messages until the server hears one (it may still be resubscribing);
    return how many sends raised ConnectionError meanwhile."""
    refused = 0
    deadline = time.monotonic() + limit
    n = 0
    while not got.messages:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server heard nothing within {limit}s of the restart")
        n += 1
        try:
            await client.send(distro.message({"uri": "/orders/9", "verb": "POST"}, n))
        except distro.ConnectionError:
            refused += 1
        try:
            await got.wait_for(1, timeout=0.1)
        except AssertionError:
            pass
    return refused


async def test_server_resubscribes_and_client_reconnects_after_a_restart(
    own_redis: RedisProcess,
) -> None:
    options: dict[str, Any] = {"url": own_redis.url, "prefix": "restart:", "connect_timeout": 1}
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/orders/{n}", got)
    server.get("/ping", lambda m: "pong")
    async with server, factory.client(options) as client:
        address = server.address
        await client.send(distro.message({"uri": "/orders/1", "verb": "POST"}, 0))
        await got.wait_for(1)

        own_redis.stop()
        took = await send_until_refused(client)
        assert took < 1.5  # refused connections fail at once; bounded by connect_timeout anyway

        own_redis.start()
        got.messages.clear()
        await resend_until_heard(client, got)
        reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
        assert reply.payload == "pong"
        assert server.address == address  # same bus, same claimed number


async def test_a_pending_request_fails_when_redis_goes_away(own_redis: RedisProcess) -> None:
    options: dict[str, Any] = {"url": own_redis.url, "prefix": "gone:", "connect_timeout": 1}
    factory = distro.create("redis")
    server = factory.server(options, close_timeout=0.1)
    started = asyncio.Event()

    @server.get("/slow")
    async def slow(msg: distro.Message) -> str:
        started.set()
        await asyncio.sleep(30)
        return "late"

    async with server, factory.client(options) as client:
        request = asyncio.ensure_future(client.request(distro.message({"uri": "/slow"}), 20))
        await asyncio.wait_for(started.wait(), 5)
        began = time.monotonic()
        own_redis.stop()
        with pytest.raises(distro.ConnectionError):
            await request
        assert time.monotonic() - began < 5


async def test_a_server_started_while_redis_is_down_fails_clearly(
    own_redis: RedisProcess,
) -> None:
    own_redis.stop()
    server = distro.create("redis").server(url=own_redis.url, connect_timeout=1)
    with pytest.raises(distro.ConnectionError, match=str(own_redis.port)):
        await server.start()


async def test_a_send_to_a_stalled_redis_fails_within_the_timeout(own_redis: RedisProcess) -> None:
    options: dict[str, Any] = {"url": own_redis.url, "prefix": "stall:", "connect_timeout": 0.5}
    big = distro.message({"uri": "/big", "verb": "POST"}, "x" * 2_000_000)
    async with distro.create("redis").client(options) as client:
        own_redis.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(distro.ConnectionError, match="took no data"):
                for _ in range(100):  # the socket buffers fill after a few
                    await client.send(big)
            assert time.monotonic() - started < 5
        finally:
            own_redis.thaw()
