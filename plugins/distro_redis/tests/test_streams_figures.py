"""The figures issue 10 asks of redis-streams, on a real Redis, bounded in time, each printing
its counts (``pytest -s`` shows them):

* a group of 3 server processes, 10,000 messages, one member SIGKILLed in the middle: every
  message handled at least once, none lost, duplicates at most the killed member's in-flight;
* all members down while 1,000 messages are sent, then one starts: all 1,000 handled;
* a handler failing on its first two deliveries succeeds on the third; one always failing
  ends in the dead-letter stream after ``max_deliveries``, with its error text;
* an idle member uses next to no CPU (blocking reads, no busy loop).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import distro_redis
import redis

import distro_core as distro
from distro_core.testing import Recorder, wait_until

MEMBER = str(Path(__file__).with_name("_streams_member.py"))


async def start_member(
    redis_url: str, prefix: str, group: str, out: Path, claim_after: float = 1.0
) -> tuple[asyncio.subprocess.Process, str]:
    """Start a member process; returns it and its consumer name."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, MEMBER, redis_url, prefix, group, str(out), str(claim_after),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert line.startswith(b"ready"), line
    return proc, f"{socket.gethostname()}:{int(line.split()[1])}"


def handled(files: list[Path]) -> list[int]:
    numbers: list[int] = []
    for path in files:
        if path.exists():
            numbers += [int(n) for n in path.read_bytes().split()]
    return numbers


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def test_a_member_killed_mid_stream_loses_nothing(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    count = 10_000
    group = "kill"
    files = [tmp_path / f"member{i}.txt" for i in range(3)]
    members = [await start_member(redis_url, prefix, group, f) for f in files]
    procs = [proc for proc, _ in members]
    stream = f"{prefix}distro.stream"
    rc = redis.Redis.from_url(redis_url)
    started = time.monotonic()
    try:
        async with distro.create("redis-streams").client(url=redis_url, prefix=prefix) as client:
            for n in range(count):
                await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
                if n % 500 == 499:
                    await asyncio.sleep(0.005)  # a steady stream rather than one burst
                if n == count // 3:
                    await wait_until(lambda: len(handled(files[:1])) > 0, what="member 0 busy")
                    procs[0].send_signal(signal.SIGKILL)
                    await procs[0].wait()
                    killed_at = len(handled(files))
                    # What it had read and not acknowledged when it died, by its name.
                    in_flight = len(
                        rc.xpending_range(stream, group, "-", "+", 100_000, members[0][1])
                    )
        await wait_until(
            lambda: len(set(handled(files))) >= count, timeout=20, what="every message handled"
        )
        await asyncio.sleep(0.3)  # a late duplicate would show up by now
        took = time.monotonic() - started
    finally:
        await stop(procs)
        rc.close()
    numbers = handled(files)
    unique = set(numbers)
    duplicates = len(numbers) - len(unique)
    per_member = [len(handled([f])) for f in files]
    print(
        f"\n3 members, {count} messages, member 0 killed after {killed_at} handled: "
        f"handled {len(numbers)} ({per_member}), unique {len(unique)}, lost "
        f"{count - len(unique)}, duplicates {duplicates} (killed member's in-flight "
        f"{in_flight}), {took:.1f}s"
    )
    assert unique == set(range(count))
    assert duplicates <= in_flight


async def test_messages_sent_while_every_member_is_down_are_all_handled(
    redis_url: str, prefix: str
) -> None:
    factory = distro.create("redis-streams")
    options: dict[str, Any] = {"url": redis_url, "prefix": prefix, "group": "down"}
    for _ in range(2):  # the group's members ran once, then all stopped
        member = factory.server(options)
        member.post("/job", lambda m: None)
        async with member:
            pass
    async with factory.client(url=redis_url, prefix=prefix) as client:
        for n in range(1000):
            await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
    got = Recorder()
    member = factory.server(options)
    member.post("/job", got)
    started = time.monotonic()
    async with member:
        await got.wait_for(1000, timeout=20)
    print(f"\n1000 sent with no member running; one started: {len(got.messages)} handled "
          f"in {time.monotonic() - started:.2f}s")  # fmt: skip
    assert sorted(got.payloads) == list(range(1000))  # type: ignore[type-var]


async def test_failures_are_retried_then_dead_lettered_with_their_error(
    redis_url: str, prefix: str
) -> None:
    factory = distro.create("redis-streams")
    server = factory.server(
        url=redis_url, prefix=prefix, group="retry", max_deliveries=4, redelivery_delay=0.05
    )
    flaky: list[int] = []
    broken: list[int] = []

    @server.post("/flaky")
    def fails_twice(msg: distro.Message) -> None:
        flaky.append(msg.payload)
        if len(flaky) <= 2:
            raise ConnectionResetError("the database went away")

    @server.post("/broken")
    def always_fails(msg: distro.Message) -> None:
        broken.append(msg.payload)
        raise KeyError("customer 7 does not exist")

    async with server, factory.client(url=redis_url, prefix=prefix) as client:
        await client.send(distro.message({"uri": "/flaky", "verb": "POST"}, 1))
        await client.send(distro.message({"uri": "/broken", "verb": "POST"}, 2))
        await wait_until(lambda: len(flaky) >= 3 and len(broken) >= 4, timeout=10)
        letters: list[Any] = []
        deadline = time.monotonic() + 5
        while not letters:
            assert time.monotonic() < deadline, "no dead letter"
            letters = await distro_redis.dead_letters("retry", url=redis_url, prefix=prefix)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # nothing more happens to either
    [letter] = letters
    print(f"\nflaky: handled on delivery {len(flaky)} (2 failures); broken: {len(broken)} "
          f"deliveries, then dead letter after {letter.deliveries}: {letter.error!r}")  # fmt: skip
    assert len(flaky) == 3
    assert len(broken) == 4 and letter.deliveries == 4
    assert letter.error == "KeyError: 'customer 7 does not exist'"
    assert server.stats.handler_errors == 6


async def test_an_idle_member_does_not_spin(redis_url: str, prefix: str, tmp_path: Path) -> None:
    proc, _ = await start_member(redis_url, prefix, "idle", tmp_path / "idle.txt")
    try:
        await asyncio.sleep(0.5)  # past start-up
        before, began = _cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(3)
        used, elapsed = _cpu_seconds(proc.pid) - before, time.monotonic() - began
    finally:
        await stop([proc])
    print(f"\nan idle member used {used * 1000:.0f} ms of CPU in {elapsed:.1f}s "
          f"({used / elapsed:.2%})")  # fmt: skip
    assert used / elapsed < 0.02


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
