"""Confirmed sends over jetstream mean "stored": ``client.send(msg, confirm=True)`` returns once
JetStream's publish acknowledgement (PubAck) for this message came, whether or not a member
runs; an error PubAck raises ``TransportError``; no PubAck within ``timeout`` is
``RequestTimeout``; a NATS restart meanwhile is ridden out (the send is published again, stored
once by its ``Nats-Msg-Id``). Against a real JetStream (the shared one, or a ``nats-server -js``
of the test's own where the test freezes or restarts it)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.js.api
import pytest
from _jetstream_servers import JetStreamProcess, js_options, js_url  # noqa: F401 - fixtures
from _nats_servers import free_port, nats_binary, unavailable
from distro_nats._jetstream_config import stream_name

import distro_core as distro
from distro_core.testing import Recorder, wait_until


def job(n: Any = None) -> distro.Message:
    return distro.message({"uri": "/job", "verb": "POST"}, n)


async def stored_payloads(url: str, prefix: str) -> list[Any]:
    """The payloads the prefix's stream holds, in order (read with nats-py)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        name = stream_name(prefix)
        info = await js.stream_info(name)
        payloads = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            raw = await js.get_msg(name, seq)
            assert raw.data is not None
            payloads.append(distro.parse(raw.data).payload)
        return payloads
    finally:
        await nc.close()


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait (bounded) until every thread of it has stopped: the signal
    takes effect thread by thread, and a running one may still answer meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    tasks = Path(f"/proc/{pid}/task")
    while time.monotonic() < deadline:
        states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
        if all(state in "tT" for state in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"nats-server {pid} did not stop within 5 s")


@pytest.fixture
def own_js(tmp_path: Path) -> Iterator[JetStreamProcess]:
    """A nats-server -js of this test's own, storing under tmp_path."""
    binary = nats_binary()
    if binary is None:
        unavailable("nats-server is not installed, and this test must stop its own NATS")
    assert binary is not None
    server = JetStreamProcess(binary, free_port(), tmp_path / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_confirmed_send_returns_once_stored_with_no_server_running(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    """No server runs: each confirmed send returns once JetStream stored it (the stream holds
    it when the send returns), and a group member that starts later handles all of them."""
    factory = distro.create("jetstream")
    url, prefix = js_options["url"], js_options["prefix"]
    async with factory.client(js_options) as client:
        for n in range(20):
            await client.send(job(n), confirm=True, timeout=5)
        assert await stored_payloads(url, prefix) == list(range(20))
        stats = client.stats
    assert (stats.sent, stats.confirmed, stats.requests) == (20, 20, 0)
    got = Recorder()
    member = factory.server(js_options, group="late")
    member.post("/job", got)
    async with member:
        await got.wait_for(20)
    assert got.payloads == list(range(20))


async def test_a_stored_send_whose_handler_raises_still_returned_and_is_delivered_again(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    factory = distro.create("jetstream")
    calls: list[int] = []

    def flaky(msg: distro.Message) -> None:
        calls.append(msg.payload)
        if len(calls) == 1:
            raise RuntimeError("first delivery fails")

    member = factory.server(js_options, group="workers", redelivery_delay=0.1)
    member.post("/job", flaky)
    async with member, factory.client(js_options) as client:
        await client.send(job(7), confirm=True, timeout=5)
        await wait_until(lambda: len(calls) == 2, what="the second delivery")
    assert calls == [7, 7]
    assert member.stats.handler_errors == 1
    assert client.stats.confirmed == 1


async def test_many_confirmed_sends_in_flight_each_wait_for_their_own_ack(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    """2,000 confirmed sends, 64 at a time, through a PubAck window of 16: each returns once
    its own PubAck came; the stream holds each once."""
    factory = distro.create("jetstream")
    url, prefix = js_options["url"], js_options["prefix"]
    async with factory.client(js_options, max_unacked=16) as client:
        sem = asyncio.Semaphore(64)

        async def one(n: int) -> None:
            async with sem:
                await client.send(job(n), confirm=True, timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(2000)))
        took = time.perf_counter() - started
        stats = client.stats
    print(f"\njetstream: 2,000 confirmed sends, 64 in flight: {2000 / took:,.0f}/s")
    assert stats.confirmed == stats.sent == 2000
    assert sorted(await stored_payloads(url, prefix)) == list(range(2000))


async def test_a_full_stream_that_discards_new_refuses_and_the_send_raises(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    """An operator limits the stream to 3 messages with ``discard: new``: the 4th confirmed
    send gets JetStream's error PubAck as a ``TransportError`` (not a ``ConnectionError``);
    the refusal is the caller's alone (not counted ``unheard``, not raised again by the next
    send), and once the stream has room the client goes on."""
    factory = distro.create("jetstream")
    url, prefix = js_options["url"], js_options["prefix"]

    async def limit(max_msgs: int) -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            config = (await js.stream_info(stream_name(prefix))).config
            config.max_msgs = max_msgs
            config.discard = nats.js.api.DiscardPolicy.NEW
            await js.update_stream(config)
        finally:
            await nc.close()

    async with factory.client(js_options) as client:
        await limit(3)
        for n in range(3):
            await client.send(job(n), confirm=True, timeout=5)
        with pytest.raises(distro.TransportError, match=r"did not store it.*maximum") as refused:
            await client.send(job(3), confirm=True, timeout=5)
        assert not isinstance(refused.value, distro.ConnectionError)
        await limit(10)
        await client.send(job(4))
        await client.send(job(5), confirm=True, timeout=5)
        await client.send(job(6))  # would raise an error kept from an earlier send
        stats = client.stats
    assert stats.confirmed == 4 and stats.unheard == 0
    assert await stored_payloads(url, prefix) == [0, 1, 2, 4, 5, 6]


async def test_a_confirmed_send_no_stream_takes_raises(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    url, prefix = js_options["url"], js_options["prefix"]
    async with distro.create("jetstream").client(js_options) as client:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream_name(prefix))  # nothing stores them now
        finally:
            await nc.close()
        with pytest.raises(distro.TransportError, match="no stream takes its subject"):
            await client.send(job(1), confirm=True, timeout=5)
    assert client.stats.confirmed == 0


async def test_no_publish_acknowledgement_within_the_timeout_is_request_timeout(
    own_js: JetStreamProcess,
) -> None:
    """nats-server frozen (SIGSTOP): the confirmed send raises ``RequestTimeout`` after its
    timeout; once the server goes on, the frame already written is stored anyway."""
    options = {"url": own_js.url, "prefix": "frozen"}
    async with distro.create("jetstream").client(options) as client:
        freeze(own_js.pid)
        try:
            started = time.monotonic()
            with pytest.raises(distro.RequestTimeout):
                await client.send(job(1), confirm=True, timeout=0.3)
            took = time.monotonic() - started
        finally:
            os.kill(own_js.pid, signal.SIGCONT)
        await client.send(job(2), confirm=True, timeout=5)
        stats = client.stats
    assert 0.25 < took < 2.0
    assert await stored_payloads(own_js.url, "frozen") == [1, 2]
    assert stats.confirmed == 1


@pytest.mark.slow
async def test_a_confirmed_send_rides_out_a_nats_restart_and_is_stored_once(
    own_js: JetStreamProcess,
) -> None:
    """nats-server killed (SIGKILL) while the confirmed sends' PubAcks are outstanding and
    started again 0.3 s later: every send returns (published again after the reconnection),
    and the stream holds each message once (Nats-Msg-Id within duplicate_window)."""
    options = {"url": own_js.url, "prefix": "restart", "connect_timeout": 5}
    async with distro.create("jetstream").client(options) as client:
        freeze(own_js.pid)  # the PubAcks of what follows do not come
        sending = [
            asyncio.ensure_future(client.send(job(n), confirm=True, timeout=15)) for n in range(20)
        ]
        await asyncio.sleep(0.2)
        assert not any(s.done() for s in sending)
        os.kill(own_js.pid, signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, os.waitpid, own_js.pid, 0)
        await asyncio.sleep(0.3)
        own_js.start()
        await asyncio.wait_for(asyncio.gather(*sending), 20)
        stats = client.stats
    assert stats.confirmed == 20
    assert sorted(await stored_payloads(own_js.url, "restart")) == list(range(20))
