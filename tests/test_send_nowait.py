"""``client.send_nowait`` and ``client.drain`` beyond the conformance kit: tcp back-pressure
from a server that never reads, a backlog the transport refuses (raised once, counted,
logged), ``aclose`` sending what is still queued, a link lost and made again, and middleware
seeing every message. The kit (distro_core.testing) checks delivery, order and errors over
every transport."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import distro_core as distro
from distro_core.middleware import Middleware, Outgoing
from distro_core.testing import Recorder, wait_until

POST = {"uri": "/n", "verb": "POST"}


def _deaf_server() -> socket.socket:
    """A listening socket that never accepts or reads: the kernel completes connections into
    its backlog and buffers a little, then the sender's writes stop going anywhere."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _not_sent(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and "not sent" in r.getMessage()
    ]


@asynccontextmanager
async def _link_lost(
    factory: distro.Factory,
) -> AsyncIterator[tuple[distro.Client, int]]:
    """A tcp client whose server has gone, and which knows it (its pending request failed, so
    the connection is reported lost): its next send must connect again. Yields the client and
    the port the server had."""
    first = factory.server(port=0, close_timeout=0.1)
    hanging = asyncio.Event()

    @first.get("/hang")
    async def hang(msg: distro.Message) -> None:
        hanging.set()
        await asyncio.Event().wait()

    await first.start()
    port = first.address[1]
    async with factory.client(port=port) as client:
        pending = asyncio.ensure_future(client.request(distro.message({"uri": "/hang"}), 30))
        await asyncio.wait_for(hanging.wait(), 5)
        await first.aclose()
        with pytest.raises(distro.ConnectionError):
            await asyncio.wait_for(pending, 5)
        yield client, port


# -- back-pressure: a tcp server that never reads --------------------------------------------


async def test_send_nowait_to_a_server_that_never_reads_queues_then_drain_fails_in_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="distro")
    deaf = _deaf_server()
    try:
        factory = distro.create("tcp")
        count, size = 100, 100_000  # 10 MB: far more than the kernel buffers on loopback
        messages = [distro.message(POST, [i, "y" * size]) for i in range(count)]
        total = sum(len(m.to_bytes()) for m in messages)
        async with factory.client(port=deaf.getsockname()[1], send_timeout=0.3) as client:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for msg in messages:
                    client.send_nowait(msg)  # never waits: what the socket refuses is queued
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            written = client.stats.sent
            assert written < count, "the socket took 10 MB without pushing back"
            # What is held is what the user queued (no copies of it): about its size at most.
            assert grown < total * 1.2 + 2**20, (grown, total)

            began = time.monotonic()
            with pytest.raises(distro.TransportError) as info:
                await asyncio.wait_for(client.drain(), 10)
            assert time.monotonic() - began < 5, "drain() waited past send_timeout"
            cause = info.value.__cause__
            assert isinstance(cause, distro.ConnectionError)
            assert "send_timeout" in str(cause)
            # At most one frame went out from the queue (into the socket's buffer) before the
            # stall was found; the error counts what it gave up.
            lost = count - client.stats.sent
            assert lost >= count - written - 1 and lost > 0
            assert f"{lost} message(s) given to send_nowait not sent" in str(info.value)
            [record] = _not_sent(caplog)
            assert f"{lost} message(s) not sent" in record.getMessage()
            await asyncio.wait_for(client.drain(), 1)  # raised once: now nothing to raise
            closing_began = time.monotonic()
        assert time.monotonic() - closing_began < 5, "aclose() was not bounded"
    finally:
        deaf.close()


async def test_send_nowait_goes_on_queuing_while_drain_waits_for_a_slow_server() -> None:
    # A server that reads again: nothing is lost, everything arrives in order.
    factory = distro.create("tcp")
    server = factory.server(port=0, max_concurrency=1, close_timeout=0.1)
    release = asyncio.Event()
    got = Recorder()

    @server.post("/n")
    async def slow(msg: distro.Message) -> None:
        await release.wait()
        got(msg)

    payload = "p" * 250_000
    count = 120  # 30 MB: far more than socket buffers hold
    async with server, factory.client(port=server.address[1]) as client:
        for i in range(count):
            client.send_nowait(distro.message(POST, [i, payload]))
        assert client.stats.sent < count, "nothing was queued: the server took 30 MB at once"
        draining = asyncio.ensure_future(client.drain())
        done, _ = await asyncio.wait({draining}, timeout=0.5)
        assert not done, "drain() returned while the server read nothing"
        release.set()
        await asyncio.wait_for(draining, 20)
        assert client.stats.sent == count
        messages = await got.wait_for(count, timeout=20)
    assert [m.payload[0] for m in messages] == list(range(count))


# -- a refused backlog ------------------------------------------------------------------------


async def test_a_refused_backlog_is_raised_once_by_the_next_drain_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="distro")
    factory = distro.create("tcp")
    async with _link_lost(factory) as (client, port):
        sent = client.stats.sent
        for i in range(25):
            client.send_nowait(distro.message(POST, i))  # queued: the link is down
        assert client.stats.sent == sent
        with pytest.raises(distro.TransportError) as info:
            await asyncio.wait_for(client.drain(), 10)
        # Nobody listens any more: reconnecting is refused, and all 25 are given up.
        assert "25 message(s) given to send_nowait not sent" in str(info.value)
        assert isinstance(info.value.__cause__, distro.ConnectionError)
        assert str(port) in str(info.value.__cause__)
        [record] = _not_sent(caplog)
        assert "25 message(s) not sent" in record.getMessage()
        await asyncio.wait_for(client.drain(), 1)  # once
        assert client.stats.sent == sent


async def test_a_refused_backlog_is_raised_by_send_nowait_when_no_drain_came_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="distro")
    factory = distro.create("tcp")
    async with _link_lost(factory) as (client, _):
        for i in range(5):
            client.send_nowait(distro.message(POST, i))
        await wait_until(lambda: bool(_not_sent(caplog)), what="the backlog to be refused")
        with pytest.raises(distro.TransportError, match=r"^5 message\(s\) given to send_nowait"):
            client.send_nowait(distro.message(POST, "after"))
        await asyncio.wait_for(client.drain(), 10)  # raised once already: nothing more


# -- aclose and reconnection ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["memory", "tcp"])
async def test_aclose_sends_what_send_nowait_still_queued(name: str) -> None:
    factory = distro.create(name)
    network = {"network": distro.MemoryNetwork()} if name == "memory" else {}
    server = factory.server(port=0, **network)
    got = Recorder()
    server.post("/n", got)
    # Over memory every message is queued (it has no Connection.send_nowait); over tcp, large
    # ones fill the socket and the rest are queued.
    count, payload = (200, "m") if name == "memory" else (40, "t" * 200_000)
    async with server:
        client = factory.client(port=server.address[1], **network)
        await client.open()
        for i in range(count):
            client.send_nowait(distro.message(POST, [i, payload]))
        assert client.stats.sent < count
        await asyncio.wait_for(client.aclose(), 20)  # no drain() first
        assert client.stats.sent == count
        messages = await got.wait_for(count, timeout=20)
    assert [m.payload[0] for m in messages] == list(range(count))


async def test_send_nowait_after_the_link_dropped_queues_and_reconnects() -> None:
    factory = distro.create("tcp")
    async with _link_lost(factory) as (client, port):
        second = factory.server(port=port)
        got = Recorder()
        second.post("/n", got)
        async with second:
            sent = client.stats.sent
            for i in range(50):
                client.send_nowait(distro.message(POST, i))
            assert client.stats.sent == sent, "written to a connection known to be lost"
            await asyncio.wait_for(client.drain(), 10)  # the queue's first send reconnects
            assert client.stats.sent == sent + 50
            messages = await got.wait_for(50, timeout=10)
            # The new connection is used directly again: no queue, straight to the socket.
            client.send_nowait(distro.message(POST, 50))
            assert client.stats.sent == sent + 51
            await got.wait_for(51, timeout=10)
    assert [m.payload for m in messages] == list(range(51))


# -- middleware -------------------------------------------------------------------------------


class _Recording(Middleware):
    """Records each message the client sends as the client-side hooks see it."""

    def __init__(self) -> None:
        self.sending_ids: list[tuple[str, str]] = []
        self.finished_ids: list[tuple[str, BaseException | None]] = []
        self.frame_ids: list[str] = []

    def sending(self, ctx: Outgoing) -> None:
        self.sending_ids.append((ctx.kind, ctx.message.id))
        ctx.set_header("recorded", True)

    def finished(self, ctx: Outgoing) -> None:
        self.finished_ids.append((ctx.message.id, ctx.error))

    def outgoing(self, frame: bytes) -> bytes:
        self.frame_ids.append(distro.parse(frame).id)
        return frame


class _FramesOnly(Middleware):
    """Only ``outgoing``: the client's connection is wrapped, its own send_nowait unchanged."""

    def __init__(self) -> None:
        self.frame_ids: list[str] = []

    def outgoing(self, frame: bytes) -> bytes:
        self.frame_ids.append(distro.parse(frame).id)
        return frame


@pytest.mark.parametrize("name", ["memory", "tcp", "udp4"])
async def test_a_client_middleware_sees_every_message_sent_with_send_nowait(name: str) -> None:
    factory = distro.create(name)
    network: dict[str, Any] = {"network": distro.MemoryNetwork()} if name == "memory" else {}
    server = factory.server(port=0, **network)
    got = Recorder()
    server.post("/n", got)
    recording, frames_only = _Recording(), _FramesOnly()
    count = 100
    async with server:
        options = {"port": server.address[1], **network}
        async with factory.client(options, middleware=[recording, frames_only]) as client:
            sent = [distro.message(POST, i) for i in range(count)]
            for n, msg in enumerate(sent, 1):
                client.send_nowait(msg)
                if n % 16 == 0:
                    await asyncio.wait_for(client.drain(), 10)
            await asyncio.wait_for(client.drain(), 10)
            assert client.stats.sent == count
            # udp may lose a datagram; what arrives passed the client's middleware.
            await got.wait_for(count if name != "udp4" else 1, timeout=10)
    ids = [m.id for m in sent]
    assert recording.sending_ids == [("send", i) for i in ids]
    assert recording.finished_ids == [(i, None) for i in ids]
    assert recording.frame_ids == ids
    assert frames_only.frame_ids == ids
    assert all(m.headers.get("recorded") is True for m in got.messages)
    assert {m.id for m in got.messages} <= set(ids)
