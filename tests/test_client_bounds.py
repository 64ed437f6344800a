"""Clients stay bounded: request time-outs are checked, outstanding requests are capped, and a
send to a server that reads nothing fails in bounded time (issue: hardening, defect 10)."""

from __future__ import annotations

import asyncio
import math
import socket
import time

import pytest

import distro_core as distro


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (None, TypeError),
        ("1", TypeError),
        (True, TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (0, ValueError),
        (-1.0, ValueError),
    ],
)
async def test_a_bad_timeout_is_refused_and_leaks_nothing(timeout: object, error: type) -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    server = factory.server(port=0, network=network)
    server.get("/ping", lambda msg: "pong")
    async with server, factory.client(port=server.address[1], network=network) as client:
        msg = distro.message({"uri": "/ping"})
        with pytest.raises(error, match="timeout"):
            await client.request(msg, timeout=timeout)  # type: ignore[arg-type]
        # The refused request left nothing pending: the same id can be asked for again.
        reply = await client.request(msg, timeout=5)
        assert reply.payload == "pong"


async def test_outstanding_requests_are_capped_and_the_rest_wait_their_turn() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    server = factory.server(port=0, network=network)
    release = asyncio.Event()
    started = 0

    @server.get("/slow/{n}")
    async def slow(msg: distro.Message) -> str:
        nonlocal started
        started += 1
        await release.wait()
        return msg.params["n"]

    async with (
        server,
        factory.client(port=server.address[1], network=network, max_pending=3) as client,
    ):
        calls = [
            asyncio.ensure_future(client.request(distro.message({"uri": f"/slow/{n}"}), timeout=10))
            for n in range(8)
        ]
        for _ in range(50):  # let everything that can be sent reach the server
            await asyncio.sleep(0)
        assert started == 3, "requests past max_pending must wait, not be sent"
        release.set()
        replies = await asyncio.wait_for(asyncio.gather(*calls), 10)
        assert [r.payload for r in replies] == [str(n) for n in range(8)]
        assert started == 8


async def test_waiting_for_a_slot_counts_against_the_requests_timeout() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    server = factory.server(port=0, network=network)
    never = asyncio.Event()

    @server.get("/stuck")
    async def stuck(msg: distro.Message) -> None:
        await never.wait()

    async with (
        server,
        factory.client(port=server.address[1], network=network, max_pending=1) as client,
    ):
        first = asyncio.ensure_future(client.request(distro.message({"uri": "/stuck"}), 5))
        await asyncio.sleep(0)
        began = time.monotonic()
        with pytest.raises(distro.RequestTimeout):
            await client.request(distro.message({"uri": "/stuck"}), timeout=0.2)
        assert time.monotonic() - began < 2
        first.cancel()
        never.set()  # let the server close at once


def test_max_pending_is_checked() -> None:
    factory = distro.create("memory")
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(ValueError, match="max_pending"):
            factory.client(port=1, max_pending=bad)
        with pytest.raises(ValueError, match="max_pending"):
            factory.sync_client(port=1, max_pending=bad)


def _deaf_server() -> socket.socket:
    """A listening socket that never accepts or reads: the kernel completes connections into
    its backlog and buffers a little, then the sender's writes stop going anywhere."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


async def test_tcp_send_to_a_server_that_never_reads_fails_in_bounded_time() -> None:
    deaf = _deaf_server()
    try:
        port = deaf.getsockname()[1]
        factory = distro.create("tcp")
        async with factory.client(port=port, send_timeout=0.3) as client:
            msg = distro.message({"uri": "/x", "verb": "POST"}, "y" * 200_000)
            began = time.monotonic()
            with pytest.raises(distro.ConnectionError, match=r"took no data for 0\.3s"):
                for _ in range(500):  # ~100 MB: far more than the kernel buffers on loopback
                    await client.send(msg)
            assert time.monotonic() - began < 5
    finally:
        deaf.close()


def test_sync_client_send_to_a_server_that_never_reads_fails_in_bounded_time() -> None:
    deaf = _deaf_server()
    try:
        port = deaf.getsockname()[1]
        with distro.create("tcp").sync_client(port=port, send_timeout=0.3) as client:
            msg = distro.message({"uri": "/x", "verb": "POST"}, "y" * 200_000)
            began = time.monotonic()
            with pytest.raises(distro.ConnectionError, match="send_timeout"):
                for _ in range(500):
                    client.send(msg)
            assert time.monotonic() - began < 5
    finally:
        deaf.close()
