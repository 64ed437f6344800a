"""A traced distro server in a process of its own (tests/test_tracing.py): prints its port,
serves until its standard input closes, then prints the spans it recorded as JSON."""

from __future__ import annotations

import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import distro_core as distro
from distro_core.middleware import Tracing


async def main() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    factory = distro.create("tcp")
    server = factory.server(port=0, middleware=[Tracing(provider, transport="tcp")])

    @server.post("/orders")
    async def orders(msg: distro.Message) -> str:
        await asyncio.sleep(0)
        # The handler runs inside the processing span.
        return format(trace.get_current_span().get_span_context().span_id, "016x")

    async with server:
        print(server.address[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "remote_parent": bool(s.parent and s.parent.is_remote),
            "attributes": dict(s.attributes or {}),
            "status": s.status.status_code.name,
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps(spans), flush=True)


asyncio.run(main())
