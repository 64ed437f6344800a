"""Groups over the memory transport: one member per message, redelivery, dead letters: the
rules of a broker with redelivery, enforced in-process so tests catch what production would."""

from __future__ import annotations

import asyncio
import collections

import pytest

import distro_core as distro
from distro_core.testing import wait_until


def post(n: int) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, n)


async def test_each_message_goes_to_one_member_of_the_group() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    seen: dict[str, list[int]] = {"a": [], "b": []}
    first = factory.server(port=0, network=network, group="orders")
    first.post("/order", lambda msg: seen["a"].append(msg.payload))
    async with first:
        second = factory.server(port=first.address[1], network=network, group="orders")
        second.post("/order", lambda msg: seen["b"].append(msg.payload))
        async with second, factory.client(port=first.address[1], network=network) as client:
            for n in range(100):
                await client.send(post(n))
            await wait_until(lambda: len(seen["a"]) + len(seen["b"]) == 100)
    assert sorted(seen["a"] + seen["b"]) == list(range(100)), "each message exactly once"
    assert len(seen["a"]) == len(seen["b"]) == 50, "round robin between the members"


async def test_a_port_is_shared_only_within_one_group() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    async with factory.server(port=0, network=network, group="orders") as server:
        port = server.address[1]
        with pytest.raises(distro.AddressInUse, match="group 'orders'"):
            await factory.server(port=port, network=network, group="billing").start()
        with pytest.raises(distro.AddressInUse):
            await factory.server(port=port, network=network).start()
    async with factory.server(port=0, network=network) as plain:
        with pytest.raises(distro.AddressInUse):
            await factory.server(port=plain.address[1], network=network, group="x").start()


def test_group_is_refused_where_the_transport_has_no_groups_naming_those_that_do() -> None:
    with pytest.raises(ValueError, match=r"'tcp' has no groups.*memory.*reuse_port"):
        distro.create("tcp").server(group="orders")
    with pytest.raises(ValueError, match="group must be a non-empty string"):
        distro.create("memory").server(group="")


async def test_a_failing_handler_is_redelivered_until_it_succeeds() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    attempts: collections.Counter[int] = collections.Counter()
    done: list[int] = []

    def flaky(msg: distro.Message) -> None:
        attempts[msg.payload] += 1
        if attempts[msg.payload] <= 2:
            raise RuntimeError(f"attempt {attempts[msg.payload]} fails")
        done.append(msg.payload)

    server = factory.server(port=0, network=network, group="g", redelivery_delay=0.01)
    server.post("/order", flaky)
    async with server, factory.client(port=server.address[1], network=network) as client:
        await client.send(post(7))
        await wait_until(lambda: done == [7], what="the third delivery")
    assert attempts[7] == 3
    assert network.dead_letters("g") == []


async def test_a_message_that_always_fails_becomes_a_dead_letter_with_its_error() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    calls = 0

    def broken(msg: distro.Message) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("the order has no items")

    server = factory.server(
        port=0, network=network, group="g", max_deliveries=3, redelivery_delay=0.01
    )
    server.post("/order", broken)
    async with server, factory.client(port=server.address[1], network=network) as client:
        msg = post(1)
        await client.send(msg)
        await wait_until(lambda: len(network.dead_letters("g")) == 1, what="a dead letter")
        await asyncio.sleep(0.05)  # no further delivery after it was buried
        assert calls == 3
        [letter] = network.dead_letters("g")
        assert letter.data == msg.to_bytes() and letter.group == "g"
        assert letter.deliveries == 3
        assert "ValueError" in letter.error and "the order has no items" in letter.error
        # Re-drive after a fix: delivered again, as a new message.
        server.post("/order", lambda m: None)  # a second handler cannot fix the first...
        assert network.redrive("g") == 1
        await wait_until(lambda: calls == 4, what="the redriven delivery")
    assert server.stats.handler_errors == 4


async def test_a_request_to_a_group_is_answered_once() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    first = factory.server(port=0, network=network, group="g")
    first.get("/who", lambda msg: "first")
    async with first:
        second = factory.server(port=first.address[1], network=network, group="g")
        second.get("/who", lambda msg: "second")
        async with second, factory.client(port=first.address[1], network=network) as client:
            answers = [
                (await client.request(distro.message({"uri": "/who"}), timeout=5)).payload
                for _ in range(4)
            ]
    assert sorted(answers) == ["first", "first", "second", "second"]
    assert first.stats.replies_sent + second.stats.replies_sent == 4
