"""nats-server (with JetStream, file store) killed and restarted during a run: the jetstream
servers serve again without being restarted, and nothing sent is lost (sends during the
outage wait for the connection within connect_timeout; sends JetStream had not acknowledged
are published again, stored once).

Each test runs its own ``nats-server -js -sd <tmp>`` on a free port and kills it by PID; the
shared NATS on 4222 is never touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _jetstream_servers import JetStreamProcess
from _nats_servers import free_port, nats_binary, unavailable

import distro_core as distro
from distro_core.testing import Recorder, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def own_js(tmp_path: Path) -> Iterator[JetStreamProcess]:
    """A nats-server -js of this test's own, storing under tmp_path."""
    binary = nats_binary()
    if binary is None:
        unavailable("nats-server is not installed, and this test must restart its own NATS")
    assert binary is not None
    server = JetStreamProcess(binary, free_port(), tmp_path / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("group", ["workers", None], ids=["group", "no-group"])
async def test_a_nats_restart_loses_nothing_and_servers_serve_again(
    own_js: JetStreamProcess, group: str | None
) -> None:
    count = 3000
    options: dict[str, Any] = {"url": own_js.url, "prefix": "restart", "connect_timeout": 5}
    factory = distro.create("jetstream")
    grouped = {"group": group} if group else {}
    server = factory.server({**options, "ack_wait": 2.0, **grouped})
    got = Recorder()
    server.post("/job", got)
    server.get("/ping", lambda m: "pong")
    async with server, factory.client(options) as client:

        async def sender() -> None:
            for n in range(count):
                await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
                if n % 100 == 99:
                    await asyncio.sleep(0.01)

        sending = asyncio.create_task(sender())
        await wait_until(lambda: len(got.messages) >= count // 3, timeout=20, what="a third")
        os.kill(own_js.pid, signal.SIGKILL)  # by PID: no lame-duck goodbye
        killed_at = len(got.messages)
        await asyncio.get_running_loop().run_in_executor(None, os.waitpid, own_js.pid, 0)
        down = time.monotonic()
        await asyncio.sleep(0.3)  # sends go on meanwhile: they wait for the connection
        own_js.start()
        outage = time.monotonic() - down
        await asyncio.wait_for(sending, 30)
        try:
            await wait_until(
                lambda: len(set(got.payloads)) >= count,  # type: ignore[arg-type]
                timeout=20,
                what="every message handled",
            )
        except AssertionError:
            missing = sorted(set(range(count)) - set(got.payloads))  # type: ignore[arg-type]
            raise AssertionError(
                f"{len(missing)} never handled ({missing[:5]}...{missing[-5:]}); killed after "
                f"{killed_at}; client {client.stats}; server {server.stats}"
            ) from None
        # The same server answers again: it was not restarted.
        reply = await client.request(distro.message({"uri": "/ping"}), timeout=10)
        assert reply.payload == "pong"
    numbers = got.payloads
    unique = set(numbers)  # type: ignore[arg-type]
    print(
        f"\njetstream ({'group' if group else 'no group'}): nats-server SIGKILLed after "
        f"{killed_at} of {count} handled, back after {outage:.2f}s: handled {len(numbers)}, "
        f"unique {len(unique)}, lost {count - len(unique)}, duplicates "
        f"{len(numbers) - len(unique)}"
    )
    assert unique == set(range(count)), "JetStream lost messages across its restart"
