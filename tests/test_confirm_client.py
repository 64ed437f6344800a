"""``client.send(msg, confirm=True)``: the client side of confirmed sends (tcp, udp, memory).

The server side (a repeat handled once) is in test_confirm_server.py, the fault figures (a
lossy proxy, a restarted server process) in test_confirm_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import distro_core as distro

NAMES = ["memory", "tcp", "udp4", "udp6"]


def order(n: Any = None) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, n)


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@contextlib.asynccontextmanager
async def serving(name: str) -> AsyncIterator[tuple[distro.Factory, distro.Server]]:
    factory = distro.create(name)
    kwargs: dict[str, Any] = {"port": 0}
    if name == "udp6":
        kwargs["address"] = "::1"
    async with factory.server(**kwargs) as server:
        yield factory, server


def client_of(factory: distro.Factory, server: distro.Server) -> distro.Client:
    host, port = server.address
    if factory.name == "memory":
        return factory.client(port=port)
    return factory.client(address=host, port=port)


async def test_confirmed_send_returns_after_the_handler_ran(name: str) -> None:
    async with serving(name) as (factory, server):
        seen: list[Any] = []

        async def take(msg: distro.Message) -> None:
            await asyncio.sleep(0.01)
            seen.append(msg.payload)

        server.post("/order", take)
        async with client_of(factory, server) as client:
            for n in range(20):
                await client.send(order(n), confirm=True, timeout=5)
                assert seen[-1] == n  # handled before send() returned
            assert client.stats.confirmed == 20
            assert client.stats.requests == 20
            assert client.stats.sent == 0
            await client.send(order("plain"))
            assert client.stats.sent == 1


async def test_a_handler_that_raises_fails_the_confirmed_send(name: str) -> None:
    async with serving(name) as (factory, server):

        def boom(msg: distro.Message) -> None:
            raise RuntimeError("no stock")

        server.post("/order", boom)
        async with client_of(factory, server) as client:
            with pytest.raises(distro.RemoteError) as info:
                await client.send(order(), confirm=True, timeout=5)
            assert info.value.code == "handler_error"
            with pytest.raises(distro.RemoteError) as info:
                await client.send(distro.message({"uri": "/nowhere"}), confirm=True, timeout=5)
            assert info.value.code == "no_handler"
            assert client.stats.confirmed == 0


async def test_a_confirmed_send_times_out_when_the_handler_never_finishes(name: str) -> None:
    async with serving(name) as (factory, server):
        release = asyncio.Event()

        async def slow(msg: distro.Message) -> None:
            await release.wait()

        server.post("/order", slow)
        async with client_of(factory, server) as client:
            with pytest.raises(distro.RequestTimeout):
                await client.send(order(), confirm=True, timeout=0.3)
            release.set()


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
async def test_confirm_timeout_is_checked(name: str, timeout: float) -> None:
    async with serving(name) as (factory, server), client_of(factory, server) as client:
        with pytest.raises(ValueError, match="timeout"):
            await client.send(order(), confirm=True, timeout=timeout)
        with pytest.raises(TypeError, match="timeout"):
            await client.send(order(), confirm=True, timeout="1")  # type: ignore[arg-type]


async def test_confirmed_sends_in_flight_at_once(name: str) -> None:
    async with serving(name) as (factory, server):
        counts: dict[Any, int] = {}

        def take(msg: distro.Message) -> None:
            counts[msg.payload] = counts.get(msg.payload, 0) + 1

        server.post("/order", take)
        async with client_of(factory, server) as client:
            await asyncio.gather(
                *(client.send(order(n), confirm=True, timeout=10) for n in range(500))
            )
        assert sorted(counts) == list(range(500))
        assert set(counts.values()) == {1}


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_udp_confirmed_send_waits_for_a_server_that_starts_late() -> None:
    # Nothing listens yet: the datagrams are refused (ICMP), the client sends again until the
    # server is up, and the message is handled once.
    factory = distro.create("udp4")
    port = _free_udp_port()
    handled: list[Any] = []
    async with factory.client(address="127.0.0.1", port=port) as client:
        sending = asyncio.ensure_future(client.send(order(1), confirm=True, timeout=5))
        await asyncio.sleep(0.3)
        assert not sending.done()
        server = factory.server(address="127.0.0.1", port=port)
        server.post("/order", lambda msg: handled.append(msg.payload))
        async with server:
            await asyncio.wait_for(sending, 5)
        assert handled == [1]
        assert client.stats.resent >= 1


async def test_tcp_confirmed_sends_go_on_across_a_server_restart() -> None:
    # The server closes (gracefully) and a new one takes the port while confirmed sends go
    # on: each is sent again after the reconnection, none is lost and none handled twice.
    factory = distro.create("tcp")
    counts: dict[Any, int] = {}

    def take(msg: distro.Message) -> None:
        counts[msg.payload] = counts.get(msg.payload, 0) + 1

    first = factory.server(port=0)
    first.post("/order", take)
    await first.start()
    port = first.address[1]
    async with factory.client(port=port, connect_timeout=2) as client:
        sends = [
            asyncio.ensure_future(client.send(order(n), confirm=True, timeout=10))
            for n in range(300)
        ]
        await asyncio.sleep(0)
        for _ in range(200):
            if counts:
                break
            await asyncio.sleep(0.005)
        await first.aclose()
        second = factory.server(port=port)
        second.post("/order", take)
        async with second:
            await asyncio.wait_for(asyncio.gather(*sends), 10)
    assert sorted(counts) == list(range(300))
    assert set(counts.values()) == {1}


def test_sync_client_confirmed_send() -> None:
    factory = distro.create("tcp")
    handled: list[Any] = []

    async def serve(ready: asyncio.Future[int], stop: asyncio.Event) -> None:
        server = factory.server(port=0)
        server.post("/order", lambda msg: handled.append(msg.payload))
        async with server:
            ready.set_result(server.address[1])
            await stop.wait()

    import threading

    loop = asyncio.new_event_loop()
    ready: asyncio.Future[int] = loop.create_future()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(ready, stop),))
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(asyncio.shield(ready), 5), loop
        ).result(5)
        with factory.sync_client(port=port) as client:
            client.send(order(7), confirm=True, timeout=5)
            assert handled == [7]
            assert client.stats.confirmed == 1
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_the_confirm_window_is_a_server_option() -> None:
    factory = distro.create("tcp")
    factory.server(port=0, confirm_window=5, confirm_window_bytes=1 << 10, confirm_window_age=1.5)
    with pytest.raises(ValueError, match="confirm_window"):
        factory.server(port=0, confirm_window=-1)
    with pytest.raises(TypeError, match="confirm_window_age"):
        factory.server(port=0, confirm_window_age="1")


async def test_a_confirmation_for_an_id_never_sent_is_ignored_and_counted() -> None:
    # A raw udp "server" answers the client's confirmed send with a confirmation for another
    # id first, then some garbage, then the right one: the send returns, the stranger is
    # counted `late`, the garbage `invalid`.
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    factory = distro.create("udp4")
    try:
        async with factory.client(address="127.0.0.1", port=sock.getsockname()[1]) as client:
            sending = asyncio.ensure_future(client.send(order(1), confirm=True, timeout=5))
            data, addr = await loop.sock_recvfrom(sock, 65536)
            request = distro.parse(data)
            assert request.headers["confirm"] is True
            for reply_id in ("never-sent", request.id):
                if reply_id == request.id:
                    await loop.sock_sendto(sock, b"not json", addr)
                reply = distro.message({"uri": "REPLY", "inReplyTo": reply_id}, None)
                await loop.sock_sendto(sock, reply.to_bytes(), addr)
            await asyncio.wait_for(sending, 5)
            assert client.stats.confirmed == 1
            assert client.stats.late == 1
            assert client.stats.invalid == 1
    finally:
        sock.close()


async def test_what_a_confirmation_means_is_public() -> None:
    factory = distro.create("memory")
    async with factory.server(port=0) as server, factory.client(port=server.address[1]) as c:
        assert c.confirms == "handled"
