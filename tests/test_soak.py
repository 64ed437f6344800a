"""Soak: 50 well-behaved clients and one hostile peer cycling through the attacks of the
hardening issue, over tcp and udp4. Every well-behaved request is answered, and the server's
memory, descriptors and tasks are flat at the end.

Bounded: a few seconds per transport in the suite; ``DISTRO_SOAK_SECONDS=60 pytest
tests/test_soak.py`` runs it longer.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import time
from typing import Any

import pytest

import distro_core as distro

SECONDS = float(os.environ.get("DISTRO_SOAK_SECONDS", "4"))
CLIENTS = 50


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _frame(headers: dict[str, Any], payload: Any = None, id: str = "hostile") -> bytes:
    return json.dumps({"id": id, "headers": headers, "payload": payload}).encode()


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def _attacks(target_port: int) -> list[bytes]:
    """One round of hostile frames (each a whole datagram, or a line over tcp)."""
    deaf = {"address": "127.0.0.1", "port": target_port}
    return [
        b"\x00\xffnot json at all",
        b'{"id":"1","headers":{"uri":"/ping\xff\xfe"}}',
        b"[1, 2, 3]",
        _frame({"uri": "/nobody/handles/this", "replyTo": "x"}),
        _frame({"uri": "/ping", "replyTo": json.loads(json.dumps(_nested(900)))}),
        _frame({"uri": "/ping", "verb": "GET", **deaf}),  # RECEIVED to a port that never answers
        _frame({"uri": "/ping", "address": "x" * 400, "port": 9}),
        _frame({"uri": "/ping", "address": "\udcff.example", "port": 9}),
        _frame({"uri": "/slow", "replyTo": "x"}),  # an async handler that takes a while
    ]


async def _hostile_tcp(host: str, port: int, frames: list[bytes], stop: asyncio.Event) -> int:
    sent = 0
    idle: list[asyncio.StreamWriter] = []
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.write(b"\n".join(frames) + b"\n")
        writer.write(b'{"id":"cut","headers":{"uri":"/ping"},"payload":"' + b"p" * 50_000)
        sent += len(frames)
        try:
            await writer.drain()
        except OSError:
            pass
        idle.append(writer)  # left open, never reading: idle connections pile up...
        if len(idle) > 20:  # ...up to a point, then go away mid-frame
            idle.pop(0).close()
        await asyncio.sleep(0.005)
    for writer in idle:
        writer.close()
    return sent


async def _hostile_udp(host: str, port: int, frames: list[bytes], stop: asyncio.Event) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = 0
    try:
        while not stop.is_set():
            for frame in frames:
                try:
                    sock.sendto(frame, (host, port))
                    sent += 1
                except OSError:
                    pass
            await asyncio.sleep(0.005)
    finally:
        sock.close()
    return sent


@pytest.mark.parametrize("name", ["tcp", "udp4"])
async def test_soak_with_a_hostile_peer(name: str) -> None:
    deaf = socket.socket()
    deaf.bind(("127.0.0.1", 0))
    deaf.listen(0)
    factory = distro.create(name)
    options: dict[str, Any] = {"port": 0, "idle_timeout": 1.0} if name == "tcp" else {"port": 0}
    server = factory.server(options, max_concurrency=64, close_timeout=1.0)
    server.get("/ping", lambda msg: "pong")

    @server.get("/slow")
    async def slow(msg: distro.Message) -> str:
        await asyncio.sleep(0.05)
        return "slow"

    unanswered = 0
    answered = 0
    try:
        async with server:
            host, port = server.address
            clients = [factory.client(address=host, port=port) for _ in range(CLIENTS)]
            for client in clients:
                await client.open()

            async def behave(client: distro.Client, until: float) -> None:
                nonlocal answered, unanswered
                while time.monotonic() < until:
                    try:
                        reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
                        assert reply.payload == "pong"
                        answered += 1
                    except distro.RequestTimeout:
                        unanswered += 1
                    await asyncio.sleep(0.01)

            # Warm up, then take the baseline.
            await asyncio.gather(*(behave(c, time.monotonic() + 0.5) for c in clients))
            gc.collect()
            rss, fds, tasks = _rss(), _fds(), len(asyncio.all_tasks())
            stop = asyncio.Event()
            frames = _attacks(deaf.getsockname()[1])
            attack = _hostile_tcp if name == "tcp" else _hostile_udp
            hostile = asyncio.ensure_future(attack(host, port, frames, stop))
            until = time.monotonic() + SECONDS
            await asyncio.gather(*(behave(c, until) for c in clients))
            stop.set()
            hostile_sent = await hostile
            # Let what the attack left behind time out (idle connections, acks, slow handlers).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                gc.collect()
                if _fds() <= fds + 2 and len(asyncio.all_tasks()) <= tasks:
                    break
                await asyncio.sleep(0.1)
            grown_rss, grown_fds = _rss() - rss, _fds() - fds
            grown_tasks = len(asyncio.all_tasks()) - tasks
            for client in clients:
                await client.aclose()
    finally:
        deaf.close()
    stats = server.stats
    print(
        f"\n{name}: {answered} requests answered, {unanswered} not; hostile frames sent "
        f"{hostile_sent}; dropped {dict(sorted(stats.dropped.items()))}; rss "
        f"{grown_rss / 2**20:+.1f} MiB, fds {grown_fds:+d}, tasks {grown_tasks:+d}"
    )
    assert unanswered == 0, f"{unanswered} well-behaved requests got no reply"
    assert answered > CLIENTS * 10
    assert hostile_sent > 100
    assert stats.dropped_total > 0  # the attacks were seen and counted
    assert grown_fds <= 2, f"{grown_fds} descriptors still open"
    assert grown_tasks <= 0, f"{grown_tasks} tasks still running"
    assert grown_rss < 64 * 2**20, f"RSS grew {grown_rss / 2**20:.1f} MiB"
