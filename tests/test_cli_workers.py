"""``distro run --workers N`` (processes sharing the load) and ``--reload`` (restart on a source
change), driven through the real console script."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from _cli import distro, free_port, running

import distro_core as distro_lib

APP = """
import os
import distro_core as distro

service = distro.Service("pids", transport="tcp")

@service.get("/pid")
def pid(msg):
    return os.getpid()

@service.get("/version")
def version(msg):
    return "v1"
"""


def _records(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def _pids(port: int, clients: int) -> set[int]:
    """The worker pid that answers each of ``clients`` clients (one connection each)."""
    factory = distro_lib.create("tcp")

    async def ask() -> int:
        async with factory.client(port=port) as client:
            reply = await client.request(distro_lib.message({"uri": "/pid"}), timeout=5)
            return int(reply.payload)

    return set(await asyncio.gather(*(ask() for _ in range(clients))))


def test_tcp_workers_share_one_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    args = ["run", "app:service", "-o", f"port={port}", "--workers", "2", "--log-format", "json"]
    with running(args, tmp_path, "workers") as parent:
        parent.wait_for('"event": "workers"')
        deadline = time.monotonic() + 20
        while parent.stderr().count('"event": "ready"') < 2:
            assert time.monotonic() < deadline, parent.stderr()
            time.sleep(0.05)
        [started] = [r for r in _records(parent.stderr()) if r.get("event") == "workers"]
        workers = set(started["pids"])  # type: ignore[arg-type]
        assert len(workers) == 2 and parent.proc.pid not in workers
        # 40 connections: the kernel spreads them over both (all on one: about 2e-12).
        assert asyncio.run(_pids(port, 40)) == workers
        assert parent.stop() == 0
    records = _records(parent.stderr())
    assert sum(1 for r in records if r.get("event") == "closed") == 2


def test_a_worker_that_dies_stops_the_others(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    args = ["run", "app:service", "-o", f"port={port}", "--workers", "2", "--log-format", "json"]
    with running(args, tmp_path, "workers") as parent:
        deadline = time.monotonic() + 20
        while parent.stderr().count('"event": "ready"') < 2:
            assert time.monotonic() < deadline, parent.stderr()
            time.sleep(0.05)
        [started] = [r for r in _records(parent.stderr()) if r.get("event") == "workers"]
        victim, other = started["pids"]  # type: ignore[misc]
        os.kill(victim, signal.SIGKILL)
        assert parent.proc.wait(20) == 1
    records = _records(parent.stderr())
    [exited] = [r for r in records if r.get("event") == "worker_exited"]
    assert exited["pid"] == victim and exited["status"] == -signal.SIGKILL
    assert any(r.get("event") == "closed" for r in records)  # the other closed gracefully
    with pytest.raises(ProcessLookupError):
        os.kill(other, 0)


def test_workers_over_a_transport_with_groups_join_one(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    prefix = f"workers-{os.getpid()}-{time.monotonic_ns()}:"
    args = ["run", "app:service", "-t", "redis-streams", "-o", f"prefix={prefix}",
            "--workers", "2", "--log-format", "json"]  # fmt: skip
    with running(args, tmp_path, "workers") as parent:
        deadline = time.monotonic() + 30
        while parent.stderr().count('"event": "ready"') < 2:
            assert time.monotonic() < deadline, parent.stderr()
            time.sleep(0.05)
        ready = [r for r in _records(parent.stderr()) if r.get("event") == "started"]
        assert all("group=pids" in str(r["message"]) for r in ready), ready
        reply = distro("request", "redis-streams", "/pid", "-o", f"prefix={prefix}")
        assert reply.returncode == 0, reply.stderr
        [started] = [r for r in _records(parent.stderr()) if r.get("event") == "workers"]
        assert json.loads(reply.stdout) in started["pids"]  # type: ignore[operator]
        assert parent.stop() == 0


def test_reload_restarts_on_a_source_change(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    with running(["run", "app:service", "-o", f"port={port}", "--reload"], tmp_path, "r") as proc:
        proc.wait_for("ready on")

        def version() -> object:
            result = distro("request", "tcp", "/version", "-o", f"port={port}", "--timeout", "2")
            return json.loads(result.stdout) if result.returncode == 0 else None

        assert version() == "v1"
        app.write_text(APP.replace('"v1"', '"v2"'))
        deadline = time.monotonic() + 30
        while version() != "v2":
            assert time.monotonic() < deadline, proc.stderr()
            time.sleep(0.1)
        assert "app.py changed; restarting" in proc.stderr()
        assert proc.stop() == 0
