"""redis-streams across a Redis restart (a redis-server of the test's own, keeping nothing on
disk): the stream and the group are gone; members reconnect and make them again by
themselves, and what clients send once Redis is back is handled."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _redis_servers import RedisProcess

import distro_core as distro
from distro_core.testing import Recorder


async def resend_until_handled(client: distro.Client, got: Recorder, count: int) -> int:
    """Send until the servers have handled ``count`` messages; returns how many sends were
    refused while Redis was still down (bounded: 15 s)."""
    refused = 0
    deadline = time.monotonic() + 15
    n = 100
    while len(got.messages) < count:
        assert time.monotonic() < deadline, f"only {len(got.messages)} of {count} handled"
        n += 1
        try:
            await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
        except distro.ConnectionError:
            refused += 1
        await asyncio.sleep(0.05)
    return refused


async def test_members_make_the_group_again_after_redis_restarted(
    own_redis: RedisProcess,
) -> None:
    options: dict[str, Any] = {"url": own_redis.url, "prefix": "restart:", "connect_timeout": 1}
    factory = distro.create("redis-streams")
    member, alone = factory.server(options, group="g"), factory.server(options)
    grouped, copies = Recorder(), Recorder()
    member.post("/job", grouped)
    alone.post("/job", copies)
    async with member, alone, factory.client(options) as client:
        await client.send(distro.message({"uri": "/job", "verb": "POST"}, 1))
        await grouped.wait_for(1)
        await copies.wait_for(1)

        own_redis.stop()
        own_redis.start()  # empty: no stream, no group
        await resend_until_handled(client, grouped, 2)
        await copies.wait_for(2, timeout=10)
        reply_server_address = member.address
    assert grouped.payloads[0] == 1 and len(grouped.messages) >= 2
    assert reply_server_address[0].startswith(own_redis.url)


async def test_a_member_whose_control_link_broke_reconnects_and_acknowledges(
    own_redis: RedisProcess,
) -> None:
    """Only the link that acknowledges breaks (CLIENT KILL): the member notices, reconnects
    both links, and what it handles afterwards is acknowledged (nothing stays pending)."""
    import redis

    options: dict[str, Any] = {"url": own_redis.url, "prefix": "ctl:", "connect_timeout": 1}
    factory = distro.create("redis-streams")
    member = factory.server(options, group="g", redelivery_delay=0.1)
    got = Recorder()
    member.post("/job", got)
    admin = redis.Redis.from_url(own_redis.url)
    try:
        async with member, factory.client(options) as client:
            await client.send(distro.message({"uri": "/job", "verb": "POST"}, 1))
            await got.wait_for(1)
            await asyncio.sleep(0.3)  # its control link has run a command by now
            control = [
                c["id"]
                for c in admin.client_list()
                if c["cmd"] in ("xpending", "xack", "hset", "xclaim", "xgroup", "xautoclaim")
            ]
            assert control, admin.client_list()
            for client_id in control:
                admin.client_kill_filter(_id=client_id)
            await resend_until_handled(client, got, 3)
            deadline = time.monotonic() + 5
            while admin.xpending("ctl:distro.stream", "g")["pending"]:
                assert time.monotonic() < deadline, "handled entries stayed pending"
                await asyncio.sleep(0.05)
    finally:
        admin.close()
