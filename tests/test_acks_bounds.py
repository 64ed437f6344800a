"""The Acknowledger never holds a server back and holds bounded resources (hardening): acks
run apart from handlers, bounded in time and number; links and lookups are bounded."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import distro_core as distro
from distro_core import transport as kit
from distro_core._acks import MAX_LINKS, MAX_RESOLVED, Acknowledger


class _Link(kit.Connection):
    reply_to = "recorded"

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    async def send(self, data: bytes, message: distro.Message) -> None:
        self.sent += 1

    async def aclose(self) -> None:
        self.closed = True


class _Slow(kit.Transport):
    """Connects only once :attr:`gate` is set; counts connection attempts."""

    name = "slow"
    api_version = kit.API_VERSION

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.links: list[_Link] = []
        self.attempts = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> _Slow:
        return cls()

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        raise NotImplementedError

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        self.attempts += 1
        await self.gate.wait()
        link = _Link()
        self.links.append(link)
        return link


class _Sender(kit.Peer):
    def send(self, data: bytes, reply_to: str) -> None:
        raise AssertionError("not a reply")


def order() -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"})


async def test_concurrent_first_acks_to_one_target_share_one_connection() -> None:
    # 4,000 datagrams asking for RECEIVED once leaked 3,928 descriptors: each first ack
    # connected and overwrote the stored link without closing the one before.
    transport = _Slow()
    acks = Acknowledger(transport, any_address=True)
    sends = [
        asyncio.ensure_future(acks.send(order(), ("10.0.0.1", 9), _Sender("x"))) for _ in range(50)
    ]
    await asyncio.sleep(0)
    transport.gate.set()
    assert await asyncio.gather(*sends) == [None] * 50
    assert transport.attempts == 1 and len(transport.links) == 1
    assert transport.links[0].sent == 50
    await acks.aclose()


async def test_concurrent_acks_to_many_targets_keep_at_most_max_links_open() -> None:
    transport = _Slow()
    transport.gate.set()
    acks = Acknowledger(transport, any_address=True)
    targets = [("10.0.0.1", port) for port in range(1, 4 * MAX_LINKS)]
    results = await asyncio.gather(*(acks.send(order(), t, _Sender("x")) for t in targets))
    assert results == [None] * len(targets)
    assert sum(not link.closed for link in transport.links) <= MAX_LINKS
    await acks.aclose()
    assert all(link.closed for link in transport.links)


async def test_submit_never_waits_and_bounds_acks_in_time_and_number() -> None:
    transport = _Slow()  # its gate never opens: every ack hangs in connect
    reports: list[tuple[str, str] | None] = []
    acks = Acknowledger(
        transport, any_address=True, report=reports.append, timeout=0.2, max_in_flight=10
    )
    started = [acks.submit(order(), ("10.0.0.1", 9), _Sender("x")) for _ in range(15)]
    assert started[:10] == [None] * 10
    assert [failure[0] for failure in started[10:] if failure] == ["ack_overload"] * 5
    assert acks.in_flight == 10
    for _ in range(100):
        if len(reports) == 10:
            break
        await asyncio.sleep(0.05)
    assert [r[0] for r in reports if r] == ["ack_timeout"] * 10
    assert acks.in_flight == 0
    await acks.aclose()


async def test_bad_host_names_are_refused_without_raising_or_looking_up() -> None:
    transport = _Slow()
    transport.gate.set()
    acks = Acknowledger(transport, any_address=False)
    sender = _Sender("127.0.0.1")
    for host in ["a" * 300, "x" * 64 + ".example", "\udcff.example", "", "bad\x00name"]:
        failure = await asyncio.wait_for(acks.send(order(), (host, 9), sender), 5)
        assert failure is not None and failure[0] == "ack_refused", host
    assert transport.attempts == 0


async def test_remembered_names_are_bounded() -> None:
    transport = _Slow()
    acks = Acknowledger(transport, any_address=False)

    async def fake_lookup(name: str) -> frozenset[str]:
        return frozenset({"10.9.9.9"})

    acks._lookup = fake_lookup  # type: ignore[method-assign]  # no real DNS for 3,000 names
    sender = _Sender("127.0.0.1")
    for n in range(3 * MAX_RESOLVED):
        failure = await acks.send(order(), (f"host-{n}.example", 9), sender)
        assert failure is not None and failure[0] == "ack_refused"
    assert len(acks._resolved) <= MAX_RESOLVED


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_udp_server_acking_thousands_of_datagrams_keeps_descriptors_bounded() -> None:
    factory = distro.create("udp4")
    server = factory.server(port=0)
    got = 0

    @server.post("/order")
    def take(msg: distro.Message) -> None:
        nonlocal got
        got += 1

    async with server:
        sink = factory.server(port=0)  # where the acks go: the sender's own address
        async with sink:
            before = _open_descriptors()
            host, port = server.address
            async with factory.client(address=host, port=port) as client:
                for n in range(2000):
                    headers = {"uri": "/order", "verb": "POST"}
                    headers |= {"address": "127.0.0.1", "port": sink.address[1] + (n % 3)}
                    await client.send(distro.message(headers))
                    if n % 200 == 0:
                        await asyncio.sleep(0.01)
                for _ in range(200):
                    if got >= 1900 and server._acks.in_flight == 0:  # type: ignore[attr-defined]
                        break
                    await asyncio.sleep(0.02)
            grown = _open_descriptors() - before
    assert grown <= MAX_LINKS + 4, f"{grown} descriptors still open"


async def test_acks_to_a_target_that_never_answers_do_not_stall_handlers() -> None:
    # Acks used to be tasks counted against max_concurrency: 400 of them to a tcp target
    # whose accept queue is full stalled every handler of the server for seconds.
    import socket
    import time

    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue: later connects get no answer at all
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
            fillers.append(filler)
        factory = distro.create("tcp")
        server = factory.server(port=0, max_concurrency=4, ack_any_address=True)
        server.post("/order", lambda msg: None)
        server.get("/ping", lambda msg: "pong")
        async with server, factory.client(port=server.address[1]) as client:
            where = {"address": "127.0.0.1", "port": full.getsockname()[1]}
            for _ in range(400):
                await client.send(distro.message({"uri": "/order", "verb": "POST", **where}))
            began = time.monotonic()
            reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
            assert reply.payload == "pong"
            assert time.monotonic() - began < 1.0
            # Every ack ends in bounded time, counted: timed out, or refused for overload.
            stats = server.stats
            for _ in range(600):  # at most 30 s: each ends within ACK_TIMEOUT; load slows that
                ended = sum(stats.dropped.get(r, 0) for r in ("ack_timeout", "ack_overload"))
                if ended + stats.acks_sent == 400:
                    break
                await asyncio.sleep(0.05)
            assert stats.handled == 401
            assert stats.dropped.get("ack_overload", 0) == 400 - 256
            assert stats.dropped.get("ack_timeout", 0) + stats.acks_sent == 256
    finally:
        for filler in fillers:
            filler.close()
        full.close()
