"""NATS restarts: a server resubscribes by itself; a client's send during the outage waits at
most connect_timeout for the connection to come back, then raises ConnectionError (nothing is
buffered); once NATS is back, the same server and client work again.

Each test runs its own nats-server on a free port and kills and restarts it; the shared NATS on
4222 is never touched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from _nats_servers import NatsProcess

import distro_core as distro
from distro_core.testing import Recorder


async def resend_until_heard(client: distro.Client, got: Recorder, limit: float = 15.0) -> int:
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


async def test_server_resubscribes_and_client_recovers_after_a_restart(
    own_nats: NatsProcess,
) -> None:
    options: dict[str, Any] = {"url": own_nats.url, "prefix": "restart", "connect_timeout": 1}
    factory = distro.create("nats")
    server = factory.server(options)
    got = Recorder()
    server.post("/orders/{n}", got)
    server.get("/ping", lambda m: "pong")
    async with server, factory.client(options) as client:
        address = server.address
        await client.send(distro.message({"uri": "/orders/1", "verb": "POST"}, 0))
        await got.wait_for(1)

        own_nats.stop()
        # A send just after the kill may still go into the socket before the loss is seen
        # (TCP cannot tell, and it is lost: core NATS keeps nothing); then sends are refused,
        # each within connect_timeout (1 s) plus scheduling slack.
        took = []
        deadline = time.monotonic() + 10
        while len(took) < 2:
            assert time.monotonic() < deadline, "sends still succeeded 10s after NATS died"
            started = time.monotonic()
            try:
                await client.send(distro.message({"uri": "/down", "verb": "POST"}))
            except distro.ConnectionError as exc:
                took.append(time.monotonic() - started)
                assert "connect_timeout" in str(exc) or "closed" not in str(exc)
            else:
                await asyncio.sleep(0.01)
        assert max(took) < 1.8, took

        own_nats.start()
        got.messages.clear()
        await resend_until_heard(client, got)
        reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
        assert reply.payload == "pong"
        assert server.address == address  # same bus, same claimed number


async def test_a_send_waits_for_a_quick_restart_instead_of_failing(own_nats: NatsProcess) -> None:
    options: dict[str, Any] = {"url": own_nats.url, "prefix": "quick", "connect_timeout": 8}
    factory = distro.create("nats")
    server = factory.server(options)
    got = Recorder()
    server.post("/q", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/q", "verb": "POST"}, 0))
        await got.wait_for(1)
        own_nats.stop()
        await asyncio.sleep(0.3)  # let both links see the loss (a window, not a sync point)
        restart = asyncio.get_running_loop().run_in_executor(None, own_nats.start)
        # Within connect_timeout (8 s) the send waits for the reconnection, then goes out.
        sent = distro.message({"uri": "/q", "verb": "POST"}, 1)
        for _ in range(100):
            await client.send(sent)
            try:
                await got.wait_for(2, timeout=0.2)
                break
            except AssertionError:
                pass  # published before the server had resubscribed: lost, send again
        await restart
    assert got.payloads[:2] == [0, 1]


async def test_a_pending_request_fails_when_nats_goes_away(own_nats: NatsProcess) -> None:
    options: dict[str, Any] = {"url": own_nats.url, "prefix": "gone", "connect_timeout": 1}
    factory = distro.create("nats")
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
        own_nats.stop()
        with pytest.raises(distro.ConnectionError):
            await request
        assert time.monotonic() - began < 5
