"""Confirmed sends under faults: each message handled once, none lost.

* udp4 through :class:`DropProxy`, which drops a seeded 10% of the datagrams in each direction
  (requests and confirmations): 10,000 confirmed sends, 64 in flight, all confirmed; the
  server's handler counts each message id: none missing, none handled twice (the client sends
  again until confirmed, the server answers a repeat from its window of seen ids).
* tcp with the server in a process of its own (tests/_confirm_server.py, which records each id
  it handles in a file before it confirms it), stopped gracefully (SIGTERM) in the middle of
  10,000 confirmed sends and replaced by a new process on the same port: the union of the two
  records holds every id exactly once.
* the same with the first process killed (SIGKILL): none lost; a message the killed process
  handled but had not confirmed yet is handled again by the next one (at least once across a
  crash: the window of seen ids is the process's memory). The duplicates are counted, printed.

Each test prints its figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import collections
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _drop_proxy import DropProxy

import distro_core as distro
from distro_core.testing import wait_until

COUNT = 10_000
IN_FLIGHT = 64
SEED = 20261129
SERVER_SCRIPT = Path(__file__).with_name("_confirm_server.py")


def order(n: int) -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, {"n": n})


async def send_all(
    client: distro.Client, messages: list[distro.Message], timeout: float
) -> list[tuple[distro.Message, BaseException]]:
    """Confirmed sends of ``messages`` by :data:`IN_FLIGHT` workers; returns the failures."""
    queue = iter(messages)
    failures: list[tuple[distro.Message, BaseException]] = []

    async def worker() -> None:
        for msg in queue:
            try:
                await client.send(msg, confirm=True, timeout=timeout)
            except distro.DistroError as exc:
                failures.append((msg, exc))

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return failures


# -- udp4 through a proxy that drops 10% each way ----------------------------------------------


async def test_udp_confirmed_sends_through_a_lossy_proxy_are_each_handled_once() -> None:
    factory = distro.create("udp4")
    server = factory.server(address="127.0.0.1", port=0)
    handled: collections.Counter[str] = collections.Counter()

    @server.post("/order")
    def take(msg: distro.Message) -> None:
        handled[msg.id] += 1

    messages = [order(n) for n in range(COUNT)]
    started = time.monotonic()
    async with server, DropProxy(server.address, drop=0.1, seed=SEED) as proxy:
        host, port = proxy.address
        async with factory.client(address=host, port=port) as client:
            failures = await send_all(client, messages, timeout=15.0)
            elapsed = time.monotonic() - started
            stats = client.stats
            # Every frame the client sent either was dropped by the proxy or reached the
            # server, as a first delivery or a repeat; a retransmission still on its way when
            # the last confirmation came lands within a moment.
            await wait_until(
                lambda: (
                    COUNT + stats.resent
                    == proxy.dropped_up + sum(handled.values()) + server.stats.repeats
                ),
                timeout=5,
                what="the last re-sent frames to arrive",
            )
        figures = {
            "sent": COUNT,
            "confirmed": stats.confirmed,
            "failed": len(failures),
            **proxy.counts(),
            "resent": stats.resent,
            "server_repeats": server.stats.repeats,
            "handled": sum(handled.values()),
            "handled_twice": sum(1 for n in handled.values() if n > 1),
            "seconds": round(elapsed, 2),
        }
    print(f"\nudp4 through a 10%-each-way drop proxy: {figures}")
    assert not failures, failures[:3]
    assert stats.confirmed == COUNT
    lost = {m.id for m in messages} - set(handled)
    assert not lost, f"{len(lost)} confirmed messages were never handled"
    assert figures["handled_twice"] == 0, "a message was handled twice"
    assert set(handled) == {m.id for m in messages}
    # The faults happened, in both directions, and were made good by re-sending.
    assert proxy.dropped_up > COUNT * 0.05 and proxy.dropped_down > COUNT * 0.05
    # A lost confirmation is made good only by a repeat the server answers from its window.
    assert server.stats.repeats >= proxy.dropped_down
    assert stats.resent >= server.stats.repeats


# -- tcp: the server process replaced in the middle of the sends --------------------------------


class ServerProcess:
    """tests/_confirm_server.py in a child process: its address, its record of handled ids."""

    def __init__(self, record: Path, log: Path) -> None:
        self.record = record
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.address: tuple[str, int] = ("", 0)
        self.closed_line = ""

    async def start(self, port: int) -> ServerProcess:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SERVER_SCRIPT),
                str(port),
                str(self.record),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        if not line.startswith("ready "):
            await self.stop(signal.SIGKILL)
            raise AssertionError(f"server process did not start: {line!r}\n{self.log_text()}")
        _, host, bound = line.split()
        self.address = (host, int(bound))
        return self

    async def stop(self, how: signal.Signals) -> int:
        """Signal the process (by its own pid) and wait for it to exit; its exit code."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        if proc.returncode is None:
            proc.send_signal(how)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        self.closed_line = rest.decode().strip()
        return await asyncio.wait_for(proc.wait(), 30)

    def ids(self) -> list[str]:
        """The ids this process recorded, in order (an id twice if it handled it twice)."""
        if not self.record.exists():
            return []
        return self.record.read_text(encoding="ascii").split()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


async def replaced_mid_way(
    tmp_path: Path, how: signal.Signals
) -> tuple[list[distro.Message], list[list[str]], dict[str, Any], list[Any]]:
    """10,000 confirmed sends to a tcp server process that is stopped with ``how`` once a third
    are confirmed and replaced by a new process on the same port."""
    first = await ServerProcess(tmp_path / "first.ids", tmp_path / "first.log").start(0)
    second = ServerProcess(tmp_path / "second.ids", tmp_path / "second.log")
    factory = distro.create("tcp")
    messages = [order(n) for n in range(COUNT)]
    host, port = first.address
    started = time.monotonic()
    figures: dict[str, Any] = {"signal": how.name}
    try:
        async with factory.client(address=host, port=port) as client:
            stats = client.stats

            async def replace() -> None:
                await wait_until(
                    lambda: stats.confirmed >= COUNT // 3, timeout=30, what="a third confirmed"
                )
                figures["confirmed_at_stop"] = stats.confirmed
                figures["first_exit"] = await first.stop(how)
                figures["first_closed"] = first.closed_line
                await second.start(port)
                figures["confirmed_at_restart"] = stats.confirmed

            replacing = asyncio.ensure_future(replace())
            failures = await send_all(client, messages, timeout=30.0)
            await asyncio.wait_for(replacing, 30)
            figures.update(
                confirmed=stats.confirmed, resent=stats.resent, seconds=0.0, failed=len(failures)
            )
            figures["seconds"] = round(time.monotonic() - started, 2)
        figures["second_exit"] = await second.stop(signal.SIGTERM)
        figures["second_closed"] = second.closed_line
    finally:
        for server in (first, second):
            if server.proc is not None and server.proc.returncode is None:
                server.proc.kill()  # only the processes this test started
                await server.proc.wait()
    return messages, [first.ids(), second.ids()], figures, failures


def tally(messages: list[distro.Message], records: list[list[str]]) -> dict[str, int]:
    every = collections.Counter(i for record in records for i in record)
    sent = {m.id for m in messages}
    return {
        "handled_by_first": len(records[0]),
        "handled_by_second": len(records[1]),
        "lost": len(sent - set(every)),
        "handled_twice": sum(1 for n in every.values() if n > 1),
        "unknown_ids": len(set(every) - sent),
    }


async def test_tcp_confirmed_sends_across_a_graceful_server_restart(tmp_path: Path) -> None:
    messages, records, figures, failures = await replaced_mid_way(tmp_path, signal.SIGTERM)
    counts = tally(messages, records)
    print(f"\ntcp, server process stopped (SIGTERM) and replaced mid-way: {figures} {counts}")
    assert not failures, failures[:3]
    assert figures["first_exit"] == 0 and figures["second_exit"] == 0, figures
    assert figures["confirmed"] == COUNT
    assert counts["lost"] == 0
    assert counts["unknown_ids"] == 0
    # The restart was in the middle: each process handled a share.
    assert counts["handled_by_first"] >= COUNT // 3 and counts["handled_by_second"] > 0
    # A graceful stop ends each connection cleanly (every reply, then the end of the stream:
    # test_a_graceful_tcp_close_ends_the_stream_with_fin), so no confirmation is lost and no
    # message runs twice.
    assert counts["handled_twice"] == 0


async def test_tcp_confirmed_sends_across_a_server_crash_are_all_handled(tmp_path: Path) -> None:
    messages, records, figures, failures = await replaced_mid_way(tmp_path, signal.SIGKILL)
    counts = tally(messages, records)
    print(f"\ntcp, server process killed (SIGKILL) and replaced mid-way: {figures} {counts}")
    assert not failures, failures[:3]
    assert figures["first_exit"] == -signal.SIGKILL, figures
    assert figures["confirmed"] == COUNT
    assert counts["lost"] == 0, "at least once across a crash: nothing confirmed may be lost"
    assert counts["unknown_ids"] == 0
    # At most the messages in flight when the process died can have run twice.
    assert counts["handled_twice"] <= IN_FLIGHT
    assert counts["handled_by_first"] >= COUNT // 3 and counts["handled_by_second"] > 0


async def test_a_graceful_tcp_close_ends_the_stream_with_fin() -> None:
    """A client that keeps sending while the server closes gracefully sees the end of the
    stream (every reply, then EOF), never a connection reset. Five rounds: whether bytes are
    still unread when the server's socket closes is a matter of timing."""
    endings = [await _close_while_a_client_sends() for _ in range(5)]
    assert all(ending == "eof" for ending in endings), f"the streams ended with {endings}"


async def _close_while_a_client_sends() -> str:
    """How the stream of a raw client ends when the server closes while the client sends
    without pause (and stops, and shuts its side down, once it reads the end of the stream):
    ``"eof"``, or the first error its socket raised (on send or on receive)."""
    factory = distro.create("tcp")
    server = factory.server(address="127.0.0.1", port=0)
    handled: list[str] = []
    server.post("/order", lambda m: handled.append(m.id))
    await server.start()
    try:
        sock = socket.create_connection(server.address, timeout=5)
    except BaseException:
        await server.aclose()
        raise
    stop = threading.Event()
    errors: list[OSError] = []
    frame = order(0).to_bytes() + b"\n"

    def keep_sending() -> None:
        deadline = time.monotonic() + 10
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                sock.sendall(frame)
        except OSError as exc:
            errors.append(exc)

    def read_to_the_end() -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError as exc:
            errors.append(exc)
        stop.set()  # the server ended the stream: a well-behaved client stops sending

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    closing: asyncio.Future[None] | None = None
    try:
        await wait_until(lambda: len(handled) >= 500, timeout=10, what="500 messages handled")
        closing = asyncio.ensure_future(server.aclose())
        await asyncio.wait_for(asyncio.to_thread(read_to_the_end), 10)
    finally:
        stop.set()
        await asyncio.to_thread(sender.join, 10)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if closing is None:
            closing = asyncio.ensure_future(server.aclose())
        await asyncio.wait_for(closing, 10)
        sock.close()
    return repr(errors[0]) if errors else "eof"


@pytest.mark.parametrize("drop", [0.0, 1.0])
async def test_drop_proxy_forwards_or_drops_as_told(drop: float) -> None:
    """The proxy itself: with 0% every datagram goes through both ways, with 100% none."""
    factory = distro.create("udp4")
    server = factory.server(address="127.0.0.1", port=0)
    server.get("/ping", lambda m: "pong")
    async with server, DropProxy(server.address, drop=drop, seed=SEED) as proxy:
        host, port = proxy.address
        async with factory.client(address=host, port=port) as client:
            if drop == 0.0:
                for _ in range(20):
                    reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
                    assert reply.payload == "pong"
                assert proxy.counts() == {
                    "forwarded_up": 20,
                    "dropped_up": 0,
                    "forwarded_down": 20,
                    "dropped_down": 0,
                }
            else:
                with pytest.raises(distro.RequestTimeout):
                    await client.request(distro.message({"uri": "/ping"}), timeout=0.3)
                assert proxy.dropped_up == 1 and proxy.forwarded_up == 0
                assert server.stats.received == 0
