"""The figures the NATS issue asks of jetstream, on a real NATS with JetStream, bounded in time,
each printing its counts (``pytest -s`` shows them):

* a group of 3 server processes, 10,000 messages, one member SIGKILLed in the middle: every
  message handled at least once, none lost, duplicates at most what the group had delivered
  and not acknowledged when the member died;
* all members down while 1,000 messages are sent, then one starts: all 1,000 handled;
* a handler failing on its first two deliveries succeeds on the third; one always failing
  ends in the dead-letter stream after ``max_deliveries``, with its error text, and is
  handled once re-driven.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import distro_nats
import nats
import pytest
from _jetstream_servers import js_options, js_url  # noqa: F401 - fixtures
from distro_nats._jetstream_config import consumer_for, stream_name

import distro_core as distro
from distro_core.testing import Recorder, wait_until

pytestmark = pytest.mark.slow

MEMBER = str(Path(__file__).with_name("_jetstream_member.py"))


async def start_member(
    url: str, prefix: str, group: str, out: Path, ack_wait: float = 2.0
) -> asyncio.subprocess.Process:
    """Start a member process and wait until it serves."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, MEMBER, url, prefix, group, str(out), str(ack_wait),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.startswith(b"ready"), line
    return proc


def handled(files: list[Path]) -> list[int]:
    """Every number the members wrote, one per handling."""
    numbers: list[int] = []
    for path in files:
        if path.exists():
            numbers += [int(n) for n in path.read_bytes().split()]
    return numbers


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    """Stop the members still running (SIGTERM, then SIGKILL after 10 s)."""
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def ack_pending(url: str, prefix: str, group: str) -> int:
    """How many deliveries of ``group``'s consumer JetStream counts unacknowledged."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream_name(prefix), consumer_for(group))
        return int(info.num_ack_pending or 0)
    finally:
        await nc.close()


async def test_a_member_killed_mid_stream_loses_nothing(
    js_options: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    url, prefix = js_options["url"], js_options["prefix"]
    count, group = 10_000, "kill"
    files = [tmp_path / f"member{i}.txt" for i in range(3)]
    procs = [await start_member(url, prefix, group, f) for f in files]
    started = time.monotonic()
    try:
        async with distro.create("jetstream").client(js_options) as client:
            for n in range(count):
                await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
                if n % 500 == 499:
                    await asyncio.sleep(0.005)  # a steady stream rather than one burst
                if n == count // 3:
                    await wait_until(lambda: len(handled(files[:1])) > 0, what="member 0 busy")
                    procs[0].send_signal(signal.SIGKILL)
                    await procs[0].wait()
                    killed_at = len(handled(files))
                    # Delivered to the group and not acknowledged when member 0 died: what it
                    # held is among these.
                    in_flight = await ack_pending(url, prefix, group)
        await wait_until(
            lambda: len(set(handled(files))) >= count, timeout=30, what="every message handled"
        )
        await asyncio.sleep(0.3)  # a late duplicate would show up by now
        took = time.monotonic() - started
    finally:
        await stop(procs)
    numbers = handled(files)
    unique = set(numbers)
    duplicates = len(numbers) - len(unique)
    per_member = [len(handled([f])) for f in files]
    print(
        f"\njetstream: 3 members, {count} messages, member 0 SIGKILLed after {killed_at} "
        f"handled: handled {len(numbers)} ({per_member}), unique {len(unique)}, lost "
        f"{count - len(unique)}, duplicates {duplicates} (unacknowledged at the kill: "
        f"{in_flight}), {took:.1f}s"
    )
    assert unique == set(range(count))
    assert duplicates <= in_flight


async def test_messages_sent_while_every_member_is_down_are_all_handled(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    factory = distro.create("jetstream")
    options = {**js_options, "group": "down"}
    member = factory.server(options)
    member.post("/job", lambda m: None)
    async with member:  # the group's member ran once, then stopped
        pass
    async with factory.client(js_options) as client:
        for n in range(1000):
            await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
    got = Recorder()
    member = factory.server(options)
    member.post("/job", got)
    started = time.monotonic()
    async with member:
        await got.wait_for(1000, timeout=20)
        await asyncio.sleep(0.2)  # nothing more comes
    print(f"\njetstream: 1000 sent with no member running; one started: {len(got.messages)} "
          f"handled in {time.monotonic() - started:.2f}s")  # fmt: skip
    assert sorted(got.payloads) == list(range(1000))  # type: ignore[type-var]


async def test_failures_are_retried_then_dead_lettered_with_their_error(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    factory = distro.create("jetstream")
    server = factory.server(js_options, group="retry", max_deliveries=4, redelivery_delay=0.05)
    flaky: list[int] = []
    broken: list[int] = []
    fixed = False

    @server.post("/flaky")
    def fails_twice(msg: distro.Message) -> None:
        flaky.append(msg.payload)
        if len(flaky) <= 2:
            raise ConnectionResetError("the database went away")

    @server.post("/broken")
    def always_fails(msg: distro.Message) -> None:
        broken.append(msg.payload)
        if not fixed:
            raise KeyError("customer 7 does not exist")

    async with server, factory.client(js_options) as client:
        await client.send(distro.message({"uri": "/flaky", "verb": "POST"}, 1))
        await client.send(distro.message({"uri": "/broken", "verb": "POST"}, 2))
        await wait_until(lambda: len(flaky) >= 3 and len(broken) >= 4, timeout=10)
        letters: list[Any] = []
        deadline = time.monotonic() + 5
        while not letters:
            assert time.monotonic() < deadline, "no dead letter"
            letters = await distro_nats.dead_letters("retry", **js_options)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # nothing more happens to either
        assert len(flaky) == 3 and len(broken) == 4
        # Re-driven once the handler is fixed: handled once more, and gone from the letters.
        fixed = True
        assert await distro_nats.redrive("retry", **js_options) == 1
        await wait_until(lambda: len(broken) == 5, timeout=10, what="the re-driven letter")
        assert await distro_nats.dead_letters("retry", **js_options) == []
    [letter] = letters
    print(f"\njetstream: flaky handled on delivery {len(flaky)} (2 failures); broken: 4 "
          f"deliveries, then dead letter after {letter.deliveries}: {letter.error!r}; "
          f"re-driven and handled")  # fmt: skip
    assert letter.deliveries == 4 and letter.group == "retry"
    assert letter.error == "KeyError: 'customer 7 does not exist'"
    assert distro.parse(letter.data).payload == 2
    assert server.stats.handler_errors == 6
