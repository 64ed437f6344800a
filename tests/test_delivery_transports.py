"""What the point-to-point transports (memory, udp4, udp6, tcp, zmq) do with replicas, with a
server that is down or restarting, and with a handler that raises: the claims of the table in
docs/delivery.md, measured through the public API.

Run with ``-s`` to see the counts the restart tests measured.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until

POINT_TO_POINT = ["memory", "udp4", "udp6", "tcp", "zmq"]


def make(name: str) -> distro.Factory:
    try:
        return distro.create(name)
    except distro.TransportNotFound:
        pytest.skip(f"the {name} transport is not installed")


def order(n: Any = None) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, n)


def loopback(name: str) -> str:
    return "::1" if name == "udp6" else "127.0.0.1"


def free_port(name: str) -> int:
    """A port nothing listens on (just now), of the kind the transport uses."""
    family = socket.AF_INET6 if name == "udp6" else socket.AF_INET
    kind = socket.SOCK_DGRAM if name.startswith("udp") else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.bind((loopback(name), 0))
        port: int = sock.getsockname()[1]
        return port


def server_at(factory: distro.Factory, port: int, take: Any) -> distro.Server:
    if factory.name == "memory":
        server = factory.server(port=port)
    else:
        server = factory.server(address=loopback(factory.name), port=port)
    server.post("/order", take)
    return server


def client_of(factory: distro.Factory, address: tuple[Any, int], **options: Any) -> distro.Client:
    return factory.client(address=address[0], port=address[1], **options)


# -- two replicas ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POINT_TO_POINT)
async def test_a_second_server_on_a_taken_port_is_address_in_use(name: str) -> None:
    factory = make(name)
    async with server_at(factory, 0, lambda m: None) as first:
        port = first.address[1]
        with pytest.raises(distro.AddressInUse, match=str(port)):
            await server_at(factory, port, lambda m: None).start()
        assert first.is_serving


@pytest.mark.parametrize("name", ["memory", "zmq"])
def test_reuse_port_is_an_unknown_option_where_no_kernel_shares_the_port(name: str) -> None:
    with pytest.raises(TypeError, match="reuse_port"):
        make(name).server(port=0, reuse_port=True)


@pytest.mark.parametrize("name", ["udp4", "udp6", "tcp", "zmq"])
def test_group_is_refused_naming_the_transports_that_have_groups(name: str) -> None:
    with pytest.raises(ValueError, match=r"has no groups.*memory.*redis-streams"):
        make(name).server(port=0, group="customers")


@pytest.mark.parametrize("name", ["memory", "udp6"])
async def test_servers_spreads_messages_over_the_replicas_in_turn(name: str) -> None:
    factory = make(name)
    log: list[list[Any]] = [[], []]
    a = server_at(factory, 0, lambda m: log[0].append(m.payload))
    b = server_at(factory, 0, lambda m: log[1].append(m.payload))
    async with a, b, factory.client(servers=[a.address, b.address]) as client:
        for n in range(10):
            await client.send(order(n), confirm=True, timeout=5)
    assert sorted(log[0] + log[1]) == list(range(10))
    assert len(log[0]) == len(log[1]) == 5, log


# -- no server ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", POINT_TO_POINT)
async def test_a_one_way_send_with_no_server_running(name: str) -> None:
    """memory: the send raises; udp: the datagram is gone, with no error and no count; tcp and
    zmq: open() tries for connect_timeout, then raises saying so."""
    factory = make(name)
    target = ("memory" if name == "memory" else loopback(name), free_port(name))
    if name in ("tcp", "zmq"):
        client = client_of(factory, target, connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(distro.ConnectionError, match=r"0\.3"):
            await client.open()
        assert 0.25 <= time.monotonic() - started < 3.0
        return
    async with client_of(factory, target) as client:
        if name == "memory":
            with pytest.raises(distro.ConnectionError, match=str(target[1])):
                await client.send(order(1))
            assert client.stats.sent == 0
            return
        for n in range(5):
            await client.send(order(n))  # udp: returns; nothing listens
        # The ICMP "port unreachable" that comes back is counted (and logged) as unheard: at
        # least one datagram was lost (the kernel keeps one pending error per socket).
        await wait_until(lambda: client.stats.unheard > 0, timeout=5, what="a refusal counted")
        await client.send(order(5))
        assert client.stats.sent == 6
        assert 1 <= client.stats.unheard <= 6


@pytest.mark.parametrize("name", ["tcp", "zmq"])
async def test_a_client_opened_before_its_server_waits_for_it(name: str) -> None:
    factory = make(name)
    port = free_port(name)
    got = Recorder()
    server = server_at(factory, port, got)
    client = client_of(factory, (loopback(name), port), connect_timeout=5)
    opening = asyncio.ensure_future(client.open())
    await asyncio.sleep(0.3)  # the client keeps trying meanwhile
    assert not opening.done()
    async with server:
        await asyncio.wait_for(opening, 5)
        try:
            await client.send(order(1))
            await got.wait_for(1)
        finally:
            await client.aclose()
    assert got.payloads == [1]


# -- a restart ---------------------------------------------------------------------------------


async def _forty_sends_across_a_restart(name: str, confirm: bool) -> dict[str, Any]:
    """Send 0..39, one every 10 ms: the server closes (gracefully) before send 10 and a new
    one starts on the same port before send 30. Return what happened to each send."""
    factory = make(name)
    handled: list[int] = []
    server = server_at(factory, 0, lambda m: handled.append(m.payload))
    await server.start()
    address = server.address
    raised: list[int] = []
    stats: list[distro.ServerStats] = []
    try:
        async with client_of(factory, address) as client:
            for n in range(40):
                if n == 10:
                    await wait_until(lambda: len(handled) == 10, what="the first ten handled")
                    await server.aclose()
                    stats.append(server.stats)
                elif n == 30:
                    server = server_at(factory, address[1], lambda m: handled.append(m.payload))
                    await server.start()
                try:
                    if confirm:
                        await client.send(order(n), confirm=True, timeout=10)
                    else:
                        await client.send(order(n))
                except distro.ConnectionError:
                    raised.append(n)
                await asyncio.sleep(0.01)
            if name.startswith("udp") and not confirm:
                await wait_until(lambda: len(set(handled)) >= 20, what="the sends while up")
                await asyncio.sleep(0.1)  # a straggler would show by now
            else:
                await wait_until(
                    lambda: len(set(handled) | set(raised)) == 40, what="every send accounted"
                )
            client_stats = client.stats
    finally:
        await server.aclose()
    stats.append(server.stats)
    lost = sorted(set(range(40)) - set(handled) - set(raised))
    duplicates = len(handled) - len(set(handled))
    print(
        f"\n{name}{' confirm=True' if confirm else ''}: 40 sends across a restart: handled "
        f"{len(set(handled))}, raised ConnectionError {len(raised)}, lost silently {len(lost)}, "
        f"handled twice {duplicates}; client {client_stats}; servers received "
        f"{[s.received for s in stats]}, dropped {[s.dropped for s in stats]}"
    )
    return {
        "handled": handled,
        "raised": raised,
        "lost": lost,
        "duplicates": duplicates,
        "client": client_stats,
        "servers": stats,
    }


@pytest.mark.parametrize("name", POINT_TO_POINT)
async def test_forty_one_way_sends_across_a_server_restart(name: str) -> None:
    result = await _forty_sends_across_a_restart(name, confirm=False)
    before, down, after = set(range(10)), set(range(10, 30)), set(range(30, 40))
    handled, raised = set(result["handled"]), set(result["raised"])
    assert result["duplicates"] == 0
    assert before <= handled
    if name.startswith("udp"):
        # Every datagram sent while nothing listened is gone, without an error; the ICMP
        # refusals that came back are counted unheard (at least one, at most one per datagram).
        assert raised == set()
        assert handled == before | after
        assert result["lost"] == sorted(down)
        assert result["client"].sent == 40
        assert 1 <= result["client"].unheard <= len(down), result["client"]
        print(f"\n{name}: 20 datagrams lost while down, {result['client'].unheard} counted unheard")
    else:
        # Nothing is lost silently: each send was handled or raised ConnectionError.
        assert result["lost"] == []
        if name in ("memory", "tcp"):
            assert raised == down and handled == before | after
        else:
            # zmq: a frame sent before ZeroMQ noticed the break waits in its queue and goes to
            # the new server; then sends raise until ZeroMQ has reconnected (it retries every
            # 100 ms and more), which may be after some of the last ten.
            assert raised <= down | after and len(raised & down) >= 15


@pytest.mark.parametrize("name", POINT_TO_POINT)
async def test_forty_confirmed_sends_across_a_server_restart(name: str) -> None:
    """40 confirmed sends one after another while the server closes after the tenth and a new
    one starts on the same port 300 ms later: each send waits (within its timeout) and is
    confirmed; each message is handled once."""
    factory = make(name)
    handled: list[int] = []
    servers = [server_at(factory, 0, lambda m: handled.append(m.payload))]
    await servers[0].start()
    address = servers[0].address

    async def restart() -> None:
        await wait_until(lambda: len(handled) >= 10, what="the first ten handled")
        await servers[0].aclose()
        await asyncio.sleep(0.3)  # down for a while
        servers.append(server_at(factory, address[1], lambda m: handled.append(m.payload)))
        await servers[1].start()

    restarting = asyncio.ensure_future(restart())
    took = []
    try:
        async with client_of(factory, address) as client:
            for n in range(40):
                started = time.monotonic()
                await client.send(order(n), confirm=True, timeout=10)
                took.append(time.monotonic() - started)
                await asyncio.sleep(0.01)  # one every 10 ms or so, as a service would
            stats = client.stats
        await restarting
    finally:
        restarting.cancel()
        for server in servers:
            await server.aclose()
    duplicates = len(handled) - len(set(handled))
    print(
        f"\n{name}: 40 confirmed sends across a restart: handled {len(set(handled))}, twice "
        f"{duplicates}, longest wait {max(took):.2f}s; client {stats}; servers received "
        f"{[s.stats.received for s in servers]}, repeats {[s.stats.repeats for s in servers]}"
    )
    assert sorted(set(handled)) == list(range(40))
    assert duplicates == 0
    assert stats.confirmed == 40
    assert max(took) >= 0.2  # one of them waited for the new server


# -- a handler that raises ---------------------------------------------------------------------


@pytest.mark.parametrize("name", POINT_TO_POINT)
async def test_a_handler_that_raises_is_counted_and_the_message_not_delivered_again(
    name: str,
) -> None:
    factory = make(name)
    calls: list[int] = []
    got = Recorder()

    def broken(msg: distro.Message) -> None:
        calls.append(msg.payload)
        raise RuntimeError("the order book is on fire")

    server = server_at(factory, 0, broken)
    server.post("/ok", got)
    async with server, client_of(factory, server.address) as client:
        await client.send(order(1))  # returns: a one-way send hears nothing of the failure
        await client.send(distro.message({"uri": "/ok", "verb": "POST"}, 2))
        await got.wait_for(1)
        await asyncio.sleep(0.3)  # a redelivery would show by now
        with pytest.raises(distro.RemoteError) as caught:
            await client.send(order(3), confirm=True, timeout=5)
    assert caught.value.code == "handler_error"
    assert "internal error" in str(caught.value)  # (over udp cut to the request's size)
    assert calls == [1, 3]
    assert server.stats.handler_errors == 2


async def test_in_a_memory_group_a_confirmed_send_whose_handler_raises_is_retried() -> None:
    """The first delivery's error answers the confirmed send; the message is delivered again
    after redelivery_delay, as a plain send's is (tests/test_memory_groups.py)."""
    factory = distro.create("memory")
    calls: list[int] = []

    def flaky(msg: distro.Message) -> None:
        calls.append(msg.payload)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails")

    server = factory.server(port=0, group="customers", redelivery_delay=0.05)
    server.post("/order", flaky)
    async with server, factory.client(port=server.address[1]) as client:
        with pytest.raises(distro.RemoteError) as caught:
            await client.send(order(7), confirm=True, timeout=5)
        assert caught.value.code == "handler_error"
        await wait_until(lambda: len(calls) == 2, timeout=2, what="the second delivery")
    assert calls == [7, 7]
