"""OpenTelemetry tracing (distro_core.middleware.Tracing): W3C trace context in the headers,
spans for send, request and handle following the messaging conventions, the handler's span a
child of the sender's across two processes (the SDK's in-memory exporter on each side)."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import distro_core as distro
from distro_core.middleware import Tracing
from distro_core.testing import wait_until

PEER = Path(__file__).parent / "_tracing_peer.py"
POST = {"uri": "/orders", "verb": "POST"}


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_the_handlers_span_is_a_child_of_the_senders_across_processes() -> None:
    provider, exporter = _provider()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PEER),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 20))
        factory = distro.create("tcp")
        tracing = Tracing(provider, transport="tcp")
        async with factory.client(port=port, middleware=[tracing]) as client:
            reply = await client.request(distro.message(POST, 1))
            await client.send(distro.message(POST, 2))
            await client.request(distro.message(POST, 3))  # the send was handled before it
        proc.stdin.close()
        remote = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    local = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()}
    names = [s.name for s in local.values()]
    assert names == ["request /orders", "send /orders", "request /orders"]
    assert len(remote) == 3
    for span in remote:
        sender = local[span["parent"]]  # its parent is the client's span, in this process
        assert span["remote_parent"]
        assert span["trace_id"] == format(sender.context.trace_id, "032x")
        assert span["name"] == "process /orders"
        assert span["attributes"]["messaging.system"] == "distro"
        assert span["attributes"]["messaging.destination.name"] == "/orders"
        assert span["attributes"]["messaging.operation.type"] == "process"
        assert span["attributes"]["distro.transport"] == "tcp"
        assert (
            span["attributes"]["messaging.message.id"] == sender.attributes["messaging.message.id"]
        )
    kinds = sorted(span["kind"] for span in remote)
    assert kinds == ["CONSUMER", "SERVER", "SERVER"]
    first = next(s for s in remote if s["span_id"] == reply.payload)  # current in the handler
    assert local[first["parent"]].name == "request /orders"
    request = next(iter(local.values()))
    assert request.kind == trace.SpanKind.CLIENT
    assert request.attributes["messaging.operation.type"] == "send"
    assert request.attributes["messaging.operation.name"] == "request"


async def test_a_handlers_own_calls_are_children_and_failures_are_recorded() -> None:
    provider, exporter = _provider()
    factory = distro.create("memory")
    inner = factory.server(port=0, middleware=[Tracing(provider)])
    inner.post("/inner", lambda msg: "deep")
    outer = factory.server(port=0, middleware=[Tracing(provider)])
    hops: list[distro.Client] = []

    @outer.post("/outer")
    async def call_inner(msg: distro.Message) -> Any:
        reply = await hops[0].request(distro.message({"uri": "/inner", "verb": "POST"}))
        return reply.payload

    @outer.post("/fails")
    def fails(msg: distro.Message) -> None:
        raise KeyError("nope")

    async with inner, outer:
        hops.append(factory.client(port=inner.address[1], middleware=[Tracing(provider)]))
        caller = factory.client(port=outer.address[1], middleware=[Tracing(provider)])
        async with hops[0], caller as c:
            reply = await c.request(distro.message({"uri": "/outer", "verb": "POST"}))
            assert reply.payload == "deep"
            with pytest.raises(distro.RemoteError):
                await c.request(distro.message({"uri": "/fails", "verb": "POST"}))
            await c.send(distro.message({"uri": "/nowhere", "verb": "POST"}))
            await wait_until(lambda: outer.stats.dropped, what="the unrouted message")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chain = ["request /outer", "process /outer", "request /inner", "process /inner"]
    for parent, child in itertools.pairwise(chain):
        assert spans[child].parent is not None
        assert spans[child].parent.span_id == spans[parent].context.span_id, (parent, child)
    assert len({spans[name].context.trace_id for name in chain}) == 1
    failed = spans["process /fails"]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.attributes["error.type"] == "KeyError"
    assert spans["request /fails"].status.status_code == trace.StatusCode.ERROR
    assert spans["process /nowhere"].attributes["distro.dropped"] == "no_route"
