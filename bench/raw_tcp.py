"""Raw TCP baselines: asyncio ``Protocol`` with newline-delimited JSON, as distro frames it.

The receiver splits its byte stream on ``\\n`` (keeping the unfinished tail), decodes every line
with ``orjson.loads`` and counts it. Two senders, both honouring the transport's flow control
(``pause_writing``): :func:`sender` (the naive one) writes each freshly built message followed
by a newline with its own ``transport.write`` (one send system call each);
:func:`batched_sender` (the best straightforward one) builds a burst of messages and writes it
with one ``transport.writelines`` call. Request/reply: an echo
server decodes each request and writes a fresh reply; the client matches replies by
``inReplyTo`` with a time-out per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from harness import (
    Counter,
    Paced,
    RawRequests,
    Shared,
    raw_message,
    raw_reply,
    receiver_report,
    wait_done,
    wait_stop,
)

_loads = orjson.loads
NL = b"\n"


class _Lines(asyncio.Protocol):
    """Splits the stream into lines and hands each complete one to ``on_line``."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self.on_line = on_line
        self.tail = b""
        self.transport: Any = None
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        lines = data.split(NL)
        self.tail = lines.pop()
        on_line = self.on_line
        for line in lines:
            on_line(line)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    async def drain(self) -> None:
        if self.writable is not None:
            await self.writable


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        counter = Counter(shared)
        hit = counter.hit

        def on_line(line: bytes) -> None:
            _loads(line)
            hit()

        server = await loop.create_server(lambda: _Lines(on_line), params["host"], 0)
        try:
            results.put(("ready", server.sockets[0].getsockname()[:2]))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        finally:
            server.close()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(
            lambda: _Lines(lambda line: None), address[0], address[1]
        )
        uri, count = params["uri"], params["count"]
        write = transport.write
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            write(raw_message(uri, n) + NL)
            n += 1
            if proto.writable is not None:
                await proto.drain()
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        transport.close()
        results.put(("sender", report))

    asyncio.run(main())


def batched_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """The best raw sender: each burst (64 messages, the pacing unit every sender shares) is
    built into a list and written with one ``writelines`` call."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(
            lambda: _Lines(lambda line: None), address[0], address[1]
        )
        uri, count = params["uri"], params["count"]
        writelines = transport.writelines
        paced = Paced(shared, params)
        burst = paced.burst
        paced.start()
        n = 0
        while n < count:
            end = min(n + burst, count)
            writelines([raw_message(uri, seq) + NL for seq in range(n, end)])
            n = end
            if proto.writable is not None:
                await proto.drain()
            if not await paced.pause(n):
                break
        report = paced.finish(n)
        transport.close()
        results.put(("sender", report))

    asyncio.run(main())


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def make() -> _Lines:
            proto: _Lines

            def on_line(line: bytes) -> None:
                proto.transport.write(raw_reply(_loads(line)) + NL)

            proto = _Lines(on_line)
            return proto

        server = await loop.create_server(make, params["host"], 0)
        try:
            results.put(("ready", server.sockets[0].getsockname()[:2]))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
        finally:
            server.close()
        results.put(("receiver", {}))

    asyncio.run(main())


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        pending: dict[str, asyncio.Future[Any]] = {}

        def on_line(line: bytes) -> None:
            reply = _loads(line)
            future = pending.pop(reply["headers"]["inReplyTo"], None)
            if future is not None and not future.done():
                future.set_result(reply)

        transport, _ = await loop.create_connection(lambda: _Lines(on_line), address[0], address[1])
        uri = params["uri"]
        write = transport.write
        requests = RawRequests(pending, uri, "tcp", lambda data: write(data + NL))
        try:
            return await requests.run(params)
        finally:
            transport.close()

    results.put(("sender", asyncio.run(main())))
