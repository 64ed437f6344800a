"""A queue group of three server processes: 10,000 messages, each handled exactly once, spread
over all three (the split is printed; run with -s to see it)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

import distro_core as distro

pytestmark = pytest.mark.slow

MEMBER = Path(__file__).with_name("_group_member.py")
COUNT = 10_000


async def test_a_group_of_three_processes_handles_each_message_once(
    options: dict[str, Any],
) -> None:
    url, prefix = options["url"], options["prefix"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(MEMBER),
            url,
            prefix,
            "workers",
            f"m{i}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        for i in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line == b"ready\n", line + (await proc.stderr.read() if proc.stderr else b"")
        async with distro.create("nats").client(options) as client:
            for n in range(COUNT):
                await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
            counts = [0, 0, 0]
            deadline = asyncio.get_running_loop().time() + 30
            while sum(counts) < COUNT:
                assert asyncio.get_running_loop().time() < deadline, f"handled {counts}"
                counts = [
                    (await client.request(distro.message({"uri": f"/count/m{i}"}), 5)).payload
                    for i in range(3)
                ]
        split: dict[str, list[int]] = {}
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, err.decode()
            _, name, payloads = out.decode().split("\n")[-2].split(" ", 2)
            split[name] = json.loads(payloads)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    every = sorted(n for got in split.values() for n in got)
    print("queue group of 3 processes, 10,000 messages:", {k: len(v) for k, v in split.items()})
    assert every == list(range(COUNT)), "each message handled exactly once"
    assert all(split.values()), "spread over all"
