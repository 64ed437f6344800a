"""Raw ZeroMQ baselines: pyzmq's ``zmq.asyncio`` DEALER (client) and ROUTER (server) over
tcp on loopback, sending the same messages and decoding each with orjson.

Written as pyzmq's own advice for speed has it (and as the distro plugin does): a blocking
"shadow" of each asyncio socket sends with ``NOBLOCK`` and drains what is already queued with
``NOBLOCK``; the asyncio socket is awaited only when the plain call would block. The default
high-water mark (1000) is left alone, as distro's is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import zmq
import zmq.asyncio
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
NOBLOCK = zmq.NOBLOCK


def _router(ctx: zmq.asyncio.Context, host: str) -> tuple[zmq.asyncio.Socket, list[Any]]:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port(f"tcp://{host}")
    return sock, [host, port]


def _dealer(ctx: zmq.asyncio.Context, address: Any) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(f"tcp://{address[0]}:{address[1]}")
    return sock


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        sock, address = _router(ctx, params["host"])
        counter = Counter(shared)
        hit = counter.hit

        async def read() -> None:
            arecv = sock.recv_multipart
            recv = zmq.Socket.shadow(sock.underlying).recv_multipart
            while True:
                frames = await arecv()
                while True:
                    _loads(frames[-1])
                    hit()
                    try:
                        frames = recv(NOBLOCK)
                    except zmq.Again:
                        break

        reader = asyncio.create_task(read())
        results.put(("ready", address))
        await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        sock.close()
        ctx.term()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        sock = _dealer(ctx, address)
        asend = sock.send
        send = zmq.Socket.shadow(sock.underlying).send
        uri, count = params["uri"], params["count"]
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            data = raw_message(uri, n)
            try:
                send(data, NOBLOCK)
            except zmq.Again:
                await asend(data)
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        sock.close()
        ctx.term()
        results.put(("sender", report))

    asyncio.run(main())


def naive_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """The naive raw sender: one ``await sock.send(data)`` on the ``zmq.asyncio`` socket per
    message."""

    async def main() -> None:
        ctx = zmq.asyncio.Context()
        sock = _dealer(ctx, address)
        send = sock.send
        uri, count = params["uri"], params["count"]
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            await send(raw_message(uri, n))
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        sock.close()
        ctx.term()
        results.put(("sender", report))

    asyncio.run(main())


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        sock, address = _router(ctx, params["host"])

        recv = zmq.Socket.shadow(sock.underlying).recv_multipart
        # Replies go through the asyncio socket (NOBLOCK: its future is done at once): a send
        # on the shadow could swallow the edge-triggered wake-up the asyncio reader waits on.
        send = sock.send_multipart

        async def serve() -> None:
            while True:
                ident, data = await sock.recv_multipart()
                while True:
                    await send([ident, raw_reply(_loads(data))], NOBLOCK)
                    try:
                        ident, data = recv(NOBLOCK)
                    except zmq.Again:
                        break

        server = asyncio.create_task(serve())
        results.put(("ready", address))
        await wait_stop(shared, time.perf_counter() + params["timeout"])
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        sock.close()
        ctx.term()
        results.put(("receiver", {}))

    asyncio.run(main())


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        ctx = zmq.asyncio.Context()
        sock = _dealer(ctx, address)
        pending: dict[str, asyncio.Future[Any]] = {}

        sync: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        recv = sync.recv

        async def read() -> None:
            while True:
                data = await sock.recv()
                while True:
                    reply = _loads(data)
                    future = pending.pop(reply["headers"]["inReplyTo"], None)
                    if future is not None and not future.done():
                        future.set_result(reply)
                    try:
                        data = recv(NOBLOCK)
                    except zmq.Again:
                        break

        reader = asyncio.create_task(read())
        uri = params["uri"]
        send = sock.send  # the asyncio socket's, for the reason given in echo_server
        requests = RawRequests(pending, uri, "zmq", lambda data: send(data, NOBLOCK), awaits=True)
        try:
            return await requests.run(params)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            sock.close()
            ctx.term()

    results.put(("sender", asyncio.run(main())))
