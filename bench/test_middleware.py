"""Micro-benchmarks of the middleware chain (docs/benchmarks.md, "Middleware").

Not part of the test suite. Run with::

    .venv/bin/python -m pytest bench/test_middleware.py --benchmark-only

Groups: ``mw-dispatch`` (a request frame handed to ``Server.frame_received``, a plain handler,
a fake peer: as bench/test_micro.py's ``dispatch``) and ``mw-send`` (``await client.send(msg)``
over the memory transport, the server's handling included), each with no middleware, one
middleware whose hooks do nothing, and :class:`~distro_core.middleware.Signing` on both sides
(the frame signed by the client, verified by the server, the reply signed). The no-middleware
cases run against any distro-core (set PYTHONPATH to an older tree to compare).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit

HEADERS = {"uri": "/customer/42/orders", "verb": "POST"}
PAYLOAD = {"seq": 123456, "customer": "c-42", "qty": 3, "total": 99.5}
KEYS = {"bench": b"benchmark-secret-key-0123456789"}
CASES = ["none", "noop", "signing", "tracing-noop", "tracing-memory", "metrics"]
ROUNDS = 20_000
_EXPORTERS: list[Any] = []  # cleared after each test: spans kept would grow memory


def _middleware(case: str) -> dict[str, Any]:
    if case == "none":
        return {}
    from distro_core.middleware import Incoming, Middleware, Outgoing, Signing

    if case == "signing":
        return {"middleware": [Signing(KEYS, "bench", max_remembered=10_000_000)]}
    if case == "tracing-noop":  # the API without an SDK: no-op spans
        from opentelemetry.trace import NoOpTracerProvider

        from distro_core.middleware import Tracing

        return {"middleware": [Tracing(NoOpTracerProvider())]}
    if case == "tracing-memory":  # the SDK, every span kept by an in-memory exporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        from distro_core.middleware import Tracing

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _EXPORTERS.append(exporter)
        return {"middleware": [Tracing(provider)]}
    if case == "metrics":
        from prometheus_client import CollectorRegistry

        from distro_core.middleware import Metrics

        return {"middleware": [Metrics(CollectorRegistry())]}

    class Noop(Middleware):
        def received(self, ctx: Incoming) -> None:
            pass

        def handled(self, ctx: Incoming) -> None:
            pass

        def sending(self, ctx: Outgoing) -> None:
            pass

        def finished(self, ctx: Outgoing) -> None:
            pass

    return {"middleware": [Noop()]}


class _FakePeer(kit.Peer):
    __slots__ = ("sent",)

    def __init__(self) -> None:
        super().__init__("127.0.0.1")
        self.sent = 0

    def send(self, data: bytes, reply_to: str) -> None:
        self.sent += 1


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
    for exporter in _EXPORTERS:
        exporter.clear()
    _EXPORTERS.clear()


@pytest.mark.benchmark(group="mw-dispatch")
def test_dispatch_request(benchmark: Any, case: str, loop: asyncio.AbstractEventLoop) -> None:
    server = distro.create("memory").server(port=0, **_middleware(case))
    server.post("/customer/42/orders", lambda msg: msg.payload)
    loop.run_until_complete(server.start())
    try:
        request = {**HEADERS, "replyTo": "bench"}
        peer = _FakePeer()
        data = distro.message(request, PAYLOAD).to_bytes()
        make = lambda: data  # noqa: E731
        if case == "signing":
            signer = _middleware("signing")["middleware"][0]
            # A fresh signed frame per call (the same one again is refused as replayed),
            # made untimed.
            make = lambda: signer.outgoing(distro.message(request, PAYLOAD).to_bytes())  # noqa: E731
        benchmark.pedantic(
            server.frame_received,
            setup=lambda: ((make(), peer), {}),
            rounds=ROUNDS,
            warmup_rounds=200,
        )
        assert peer.sent == server.stats.replies_sent > 0
        assert not server.stats.dropped
    finally:
        loop.run_until_complete(server.aclose())


@pytest.mark.benchmark(group="mw-send")
def test_send_memory(benchmark: Any, case: str, loop: asyncio.AbstractEventLoop) -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    server = factory.server(port=0, network=network, **_middleware(case))
    got = [0]

    def handler(msg: distro.Message) -> None:
        got[0] += 1

    server.post("/customer/42/orders", handler)
    client = factory.client(port=server_port(loop, server), network=network, **_middleware(case))
    loop.run_until_complete(client.open())

    async def send_many() -> None:
        for _ in range(100):
            # A fresh message each time (signing refuses an id it has seen), in every case.
            await client.send(distro.message(HEADERS, PAYLOAD))
        await asyncio.sleep(0)

    try:
        benchmark(lambda: loop.run_until_complete(send_many()))
        assert got[0] > 0 and not server.stats.dropped
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(server.aclose())


def server_port(loop: asyncio.AbstractEventLoop, server: distro.Server) -> int:
    loop.run_until_complete(server.start())
    return server.address[1]
