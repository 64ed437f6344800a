"""``factory.client(servers=[(host, port), ...])``: one client, several replicas of a service."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import distro_core as distro

NAMES = ["tcp", "udp4"]


def order(n: Any = None) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, n)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def until(check: Any, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def counting(factory: distro.Factory, log: dict[int, list[Any]], index: int) -> distro.Server:
    server = factory.server(address="127.0.0.1", port=0)
    log[index] = []

    def take(msg: distro.Message) -> str:
        log[index].append(msg.payload)
        return f"server {index}"

    server.post("/order", take)
    return server


@pytest.mark.parametrize("name", NAMES)
async def test_messages_are_spread_over_the_servers_in_turn(name: str) -> None:
    factory = distro.create(name)
    log: dict[int, list[Any]] = {}
    async with counting(factory, log, 0) as a, counting(factory, log, 1) as b:
        servers = [a.address, b.address]
        async with factory.client(servers=servers) as client:
            for n in range(20):
                await client.send(order(n))
            await until(lambda: len(log[0]) + len(log[1]) == 20)
            answers = [(await client.request(order(n), timeout=5)).payload for n in range(4)]
    assert len(log[0]) == len(log[1]) == 12, log
    assert sorted(answers) == ["server 0", "server 0", "server 1", "server 1"]
    assert client.stats.members_down == 0


@pytest.mark.parametrize("name", NAMES)
async def test_a_server_that_is_down_is_skipped(name: str) -> None:
    factory = distro.create(name)
    log: dict[int, list[Any]] = {}
    dead = ("127.0.0.1", free_port(socket.SOCK_STREAM if name == "tcp" else socket.SOCK_DGRAM))
    extra = {"connect_timeout": 0.5} if name == "tcp" else {}
    async with counting(factory, log, 0) as live:  # noqa: SIM117 - the client needs its address
        async with factory.client(servers=[dead, live.address], **extra) as client:
            # Requests and confirmed sends: a request to the dead server goes to the live one
            # within its timeout (over udp the refusal comes back as ICMP after the send).
            for n in range(10):
                reply = await client.request(order(n), timeout=5)
                assert reply.payload == "server 0"
            for n in range(10, 20):
                await client.send(order(n), confirm=True, timeout=5)
            # (tcp keeps trying a refused server for connect_timeout, in the background)
            await until(lambda: client.stats.members_down >= 1)
    assert sorted(log[0]) == list(range(20))


async def test_tcp_one_way_sends_skip_a_server_that_went_down() -> None:
    factory = distro.create("tcp")
    log: dict[int, list[Any]] = {}
    async with counting(factory, log, 0) as a:
        b = counting(factory, log, 1)
        await b.start()
        async with factory.client(servers=[a.address, b.address], connect_timeout=0.5) as client:
            for n in range(4):
                await client.send(order(n))
            await until(lambda: len(log[0]) == 2 and len(log[1]) == 2)
            await b.aclose()
            await until(lambda: client.stats.members_down >= 1)  # it saw the link break
            for n in range(4, 24):
                await client.send(order(n))
            await until(lambda: len(log[0]) == 22)
    assert len(log[1]) == 2


async def test_open_does_not_wait_for_a_server_that_is_down() -> None:
    factory = distro.create("tcp")
    log: dict[int, list[Any]] = {}
    dead = ("127.0.0.1", free_port(socket.SOCK_STREAM))
    loop = asyncio.get_running_loop()
    async with counting(factory, log, 0) as live:
        started = loop.time()
        async with factory.client(servers=[dead, live.address], connect_timeout=3) as client:
            opened = loop.time() - started
            for n in range(6):
                await client.send(order(n))
            sent = loop.time() - started
            await until(lambda: len(log[0]) == 6)
    # The dead server is tried in the background (for connect_timeout), never in the way.
    assert opened < 1.0 and sent < 1.0, (opened, sent)


async def test_open_fails_only_when_no_server_can_be_reached() -> None:
    factory = distro.create("tcp")  # (udp has no connection to refuse at open())
    dead = [("127.0.0.1", free_port(socket.SOCK_STREAM)) for _ in range(2)]
    client = factory.client(servers=dead, connect_timeout=0.3)
    with pytest.raises(distro.ConnectionError, match="no server could be reached"):
        await client.open()


def test_servers_is_checked() -> None:
    factory = distro.create("tcp")
    with pytest.raises(ValueError, match="at least one"):
        factory.client(servers=[])
    with pytest.raises(TypeError, match="pair"):
        factory.client(servers=[("127.0.0.1",)])
    with pytest.raises(ValueError, match="port"):
        factory.client(servers=[("127.0.0.1", 0)])
    with pytest.raises(TypeError, match="host"):
        factory.client(servers=[(1, 80)])
    with pytest.raises(ValueError, match="twice"):
        factory.client(servers=[("127.0.0.1", 80), ("127.0.0.1", 80)])
    with pytest.raises(TypeError, match="without port"):
        factory.client(servers=[("127.0.0.1", 80)], port=81)
    with pytest.raises(TypeError, match="list"):
        factory.client(servers="127.0.0.1:80")
    with pytest.raises(TypeError, match=r"unknown option"):
        factory.client(servers=[("127.0.0.1", 80)], colour="red")


def test_servers_is_refused_on_a_bus() -> None:
    try:
        factory = distro.create("redis")
    except distro.TransportNotFound:
        pytest.skip("distro-redis is not installed")
    with pytest.raises(ValueError, match="group="):
        factory.client(servers=[("127.0.0.1", 6379)])


async def test_zmq_messages_are_spread_over_the_servers() -> None:
    try:
        factory = distro.create("zmq")
    except distro.TransportNotFound:
        pytest.skip("distro-zmq is not installed")
    log: dict[int, list[Any]] = {}
    async with counting(factory, log, 0) as a, counting(factory, log, 1) as b:  # noqa: SIM117
        async with factory.client(servers=[a.address, b.address]) as client:
            for n in range(20):
                await client.send(order(n), confirm=True, timeout=5)
            answers = {(await client.request(order(n), timeout=5)).payload for n in range(2)}
    assert len(log[0]) == len(log[1]) == 11, log
    assert answers == {"server 0", "server 1"}
