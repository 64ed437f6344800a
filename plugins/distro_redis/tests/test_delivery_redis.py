"""What redis (pub/sub) and redis-streams do with replicas, with a server that is down or
restarting, with a handler that raises, and with confirmed sends: the claims of the table in
docs/delivery.md, measured on a real Redis through the public API.

Run with ``-s`` to see the counts the restart tests measured.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until

# (transport, group): redis pub/sub; redis-streams servers without a group; members of one.
KINDS = [("redis", None), ("redis-streams", None), ("redis-streams", "customers")]
IDS = ["redis", "redis-streams", "redis-streams-group"]


def order(n: Any = None) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, n)


def server_of(name: str, options: dict[str, Any], group: str | None, take: Any) -> distro.Server:
    factory = distro.create(name)
    server = factory.server(options, group=group) if group else factory.server(options)
    server.post("/order", take)
    return server


# -- two replicas ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["redis", "redis-streams"])
def test_reuse_port_and_servers_are_refused(name: str) -> None:
    factory = distro.create(name)
    with pytest.raises(TypeError, match="reuse_port"):
        factory.server(port=0, reuse_port=True)
    with pytest.raises(ValueError, match="group="):
        factory.client(servers=[("127.0.0.1", 6379), ("127.0.0.1", 6380)])


def test_group_over_pub_sub_is_refused_naming_redis_streams() -> None:
    with pytest.raises(ValueError, match=r"'redis' has no groups.*redis-streams"):
        distro.create("redis").server(group="customers")


@pytest.mark.parametrize("name", ["redis", "redis-streams"])
async def test_two_servers_without_a_group_each_handle_every_message(
    name: str, options: dict[str, Any]
) -> None:
    factory = distro.create(name)
    got = [Recorder(), Recorder()]
    a, b = (server_of(name, options, None, got[i]) for i in range(2))
    async with a, b, factory.client(options) as client:
        # The number a server claims on the bus is its own: a second claim is refused.
        with pytest.raises(distro.AddressInUse, match=str(a.address[1])):
            await factory.server(options, port=a.address[1]).start()
        for n in range(20):
            await client.send(order(n))
        await got[0].wait_for(20)
        await got[1].wait_for(20)
    assert got[0].payloads == got[1].payloads == list(range(20))


async def test_members_of_a_group_each_take_a_message_once(options: dict[str, Any]) -> None:
    factory = distro.create("redis-streams")
    got = [Recorder(), Recorder()]
    a, b = (server_of("redis-streams", options, "customers", got[i]) for i in range(2))
    async with a, b, factory.client(options) as client:
        for n in range(40):
            await client.send(order(n))
        await wait_until(lambda: len(got[0].messages) + len(got[1].messages) >= 40)
        await asyncio.sleep(0.2)  # a second delivery would show by now
    assert sorted(got[0].payloads + got[1].payloads) == list(range(40))  # type: ignore[type-var]


# -- a restart ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "group"), KINDS, ids=IDS)
async def test_forty_one_way_sends_across_a_server_restart(
    name: str, group: str | None, options: dict[str, Any]
) -> None:
    """Send 0..39, one every 10 ms: the server closes (gracefully) before send 10 and a new one
    starts before send 30."""
    handled: list[int] = []
    server = server_of(name, options, group, lambda m: handled.append(m.payload))
    await server.start()
    raised: list[int] = []
    stats = []
    try:
        async with distro.create(name).client(options) as client:
            for n in range(40):
                if n == 10:
                    await wait_until(lambda: len(handled) == 10, what="the first ten handled")
                    await server.aclose()
                    stats.append(server.stats)
                elif n == 30:
                    server = server_of(name, options, group, lambda m: handled.append(m.payload))
                    await server.start()
                try:
                    await client.send(order(n))
                except distro.ConnectionError:
                    raised.append(n)
                await asyncio.sleep(0.01)
            if name == "redis":
                await wait_until(lambda: client.stats.unheard >= 20, what="20 unheard")
            wanted = 40 if group else 20
            await wait_until(lambda: len(set(handled)) >= wanted, what=f"{wanted} handled")
            await asyncio.sleep(0.2)  # a straggler or a duplicate would show by now
            client_stats = client.stats
    finally:
        await server.aclose()
    stats.append(server.stats)
    lost = sorted(set(range(40)) - set(handled))
    duplicates = len(handled) - len(set(handled))
    print(
        f"\n{name}{f' group={group}' if group else ''}: 40 sends across a restart: handled "
        f"{len(set(handled))}, lost {len(lost)}, handled twice {duplicates}; client "
        f"{client_stats}; servers received {[s.received for s in stats]}"
    )
    assert raised == []  # Redis took every send
    assert duplicates == 0
    if group:
        # The entries sent while no member ran waited in the stream for the new member.
        assert lost == []
    else:
        # Pub/sub keeps nothing, and a server without a group reads the stream from its end
        # when it starts: the 20 sent while it was down never reach it.
        assert lost == list(range(10, 30))
    # Over pub/sub each of them is counted on the client (Redis said nobody heard it); over
    # redis-streams Redis stored each, so nothing was unheard.
    assert client_stats.unheard == (20 if name == "redis" else 0)
    assert client_stats.sent == 40


@pytest.mark.parametrize(("name", "group"), [KINDS[0], KINDS[2]], ids=[IDS[0], IDS[2]])
async def test_confirmed_sends_across_a_server_restart(
    name: str, group: str | None, options: dict[str, Any]
) -> None:
    """40 confirmed sends one after another, the server closing after the tenth and a new one
    starting 300 ms later: over pub/sub those made while no server ran fail at once with
    no_handler; over a redis-streams group each is confirmed once Redis stored it, and the
    new member handles those made while no member ran."""
    handled: list[int] = []
    servers = [server_of(name, options, group, lambda m: handled.append(m.payload))]
    await servers[0].start()

    async def restart() -> None:
        await wait_until(lambda: len(handled) >= 10, what="the first ten handled")
        await servers[0].aclose()
        await asyncio.sleep(0.3)
        servers.append(server_of(name, options, group, lambda m: handled.append(m.payload)))
        await servers[1].start()

    restarting = asyncio.ensure_future(restart())
    refused: list[int] = []
    try:
        async with distro.create(name).client(options) as client:
            for n in range(40):
                try:
                    await client.send(order(n), confirm=True, timeout=10)
                except distro.RemoteError as exc:
                    assert exc.code == "no_handler"
                    refused.append(n)
                await asyncio.sleep(0.01)
            stats = client.stats
        await restarting
        if group:
            await wait_until(lambda: len(set(handled)) == 40, what="all 40 handled")
            await asyncio.sleep(0.2)  # a second delivery would show by now
    finally:
        restarting.cancel()
        for server in servers:
            await server.aclose()
    duplicates = len(handled) - len(set(handled))
    print(
        f"\n{name}{f' group={group}' if group else ''}: 40 confirmed sends across a restart: "
        f"handled {len(set(handled))}, refused no_handler {len(refused)}, twice {duplicates}; "
        f"client {stats}"
    )
    assert duplicates == 0
    assert set(handled) | set(refused) == set(range(40)) and not set(handled) & set(refused)
    if group:
        assert refused == [] and stats.confirmed == 40
    else:
        assert len(refused) >= 10  # 300 ms down, one send every 10 ms or more
        assert stats.confirmed == 40 - len(refused)


# -- a handler that raises ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["redis", "redis-streams"])
async def test_without_a_group_a_handler_that_raises_is_counted_and_not_delivered_again(
    name: str, options: dict[str, Any]
) -> None:
    calls: list[int] = []
    got = Recorder()

    def broken(msg: distro.Message) -> None:
        calls.append(msg.payload)
        raise RuntimeError("the order book is on fire")

    server = server_of(name, options, None, broken)
    server.post("/ok", got)
    async with server, distro.create(name).client(options) as client:
        await client.send(order(1))
        await client.send(distro.message({"uri": "/ok", "verb": "POST"}, 2))
        await got.wait_for(1)
        await asyncio.sleep(0.3)  # a redelivery would show by now
        if name == "redis":
            with pytest.raises(distro.RemoteError) as caught:
                await client.send(order(3), confirm=True, timeout=5)
            assert caught.value.code == "handler_error"
            assert "internal error" in str(caught.value)  # "on fire" stays in the server's log
        else:
            # Over redis-streams a confirmed send returns once Redis stored it: the handler's
            # failure is the server's to count, not the sender's.
            await client.send(order(3), confirm=True, timeout=5)
            await wait_until(lambda: server.stats.handler_errors == 2, what="the second error")
            await asyncio.sleep(0.3)  # a redelivery would show by now
    assert calls == [1, 3]
    assert server.stats.handler_errors == 2


async def test_in_a_group_a_plain_send_whose_handler_raises_is_delivered_again(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis-streams")
    calls: list[int] = []

    def flaky(msg: distro.Message) -> None:
        calls.append(msg.payload)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails")

    server = factory.server(options, group="customers", redelivery_delay=0.1)
    server.post("/order", flaky)
    async with server, factory.client(options) as client:
        await client.send(order(7))
        await wait_until(lambda: len(calls) == 2, what="the second delivery")
    assert calls == [7, 7]
    assert server.stats.handler_errors == 1


async def test_in_a_group_a_confirmed_send_returns_once_stored_and_a_raising_handler_gets_it_again(
    options: dict[str, Any],
) -> None:
    """Over redis-streams a confirmed send returns once Redis stored it: a handler that raises
    does not fail it; the entry stays pending and is delivered again after redelivery_delay,
    as a plain send's is."""
    factory = distro.create("redis-streams")
    calls: list[int] = []

    def flaky(msg: distro.Message) -> None:
        calls.append(msg.payload)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails")

    server = factory.server(options, group="customers", redelivery_delay=0.1)
    server.post("/order", flaky)
    async with server, factory.client(options) as client:
        await client.send(order(7), confirm=True, timeout=5)
        await wait_until(lambda: len(calls) == 2, timeout=3, what="the second delivery")
        stats = client.stats
    assert calls == [7, 7]
    assert server.stats.handler_errors == 1
    assert stats.confirmed == 1


# -- confirmed sends -------------------------------------------------------------------------


async def test_over_pub_sub_a_confirmed_send_is_handled_by_every_server(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    got = [Recorder(), Recorder()]
    a, b = (server_of("redis", options, None, got[i]) for i in range(2))
    async with a, b, factory.client(options) as client:
        await client.send(order("once"), confirm=True, timeout=5)
        await got[0].wait_for(1)
        await got[1].wait_for(1)
        await asyncio.sleep(0.1)  # the second confirmation arrives late and is dropped
        stats = client.stats
    assert got[0].payloads == got[1].payloads == ["once"]
    assert stats.confirmed == 1


async def test_a_confirmed_send_to_a_group_with_no_member_running_returns_once_stored(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis-streams")
    first = server_of("redis-streams", options, "customers", lambda m: None)
    async with first:
        pass  # the group and its route exist from now on
    got = Recorder()
    sent = uuid.uuid4().hex
    async with factory.client(options) as client:
        # No member runs: confirmed once Redis stored it (an XADD's answer, well within 2 s).
        await client.send(order(sent), confirm=True, timeout=2)
        assert client.stats.confirmed == 1
        async with server_of("redis-streams", options, "customers", got):
            await got.wait_for(1)
    assert got.payloads == [sent]
