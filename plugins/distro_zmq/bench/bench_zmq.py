"""distro over zmq against raw pyzmq (zmq.asyncio) doing the same work.

    .venv/bin/python plugins/distro_zmq/bench/bench_zmq.py [--count N] [--rounds R]

Both sides run in one process and one event loop, over tcp on loopback, with the same sockets
(ROUTER server, DEALER client) and the same wire bytes. "The same work" for the raw baseline is:
the server decodes every frame's JSON (orjson), and for requests encodes a JSON reply that the
client decodes and matches to its waiting future by id. distro does that plus validating the
message, routing it and calling a handler. A "bytes only" baseline (no JSON at all) is printed
as the ceiling. Each figure is the best of R rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import zmq
import zmq.asyncio

import distro_core as distro

PAYLOAD = {"customer": 7, "total": 12.5, "lines": [1, 2, 3]}


async def distro_one_way(count: int) -> float:
    factory = distro.create("zmq")
    server = factory.server(port=0)
    done = asyncio.Event()
    seen = 0

    @server.post("/customer/{id}")
    def update(msg: distro.Message) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    messages = [
        distro.message({"uri": "/customer/7", "verb": "POST"}, PAYLOAD) for _ in range(count)
    ]
    async with server, factory.client(port=server.address[1]) as client:
        started = time.perf_counter()
        for msg in messages:
            await client.send(msg)
        await asyncio.wait_for(done.wait(), 60)
        return count / (time.perf_counter() - started)


async def raw_one_way(count: int, decode: bool) -> float:
    ctx = zmq.asyncio.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    frames = [
        distro.message({"uri": "/customer/7", "verb": "POST"}, PAYLOAD).to_bytes()
        for _ in range(count)
    ]

    async def serve() -> None:
        for _ in range(count):
            _, data = await router.recv_multipart()
            if decode:
                orjson.loads(data)

    try:
        started = time.perf_counter()
        server = asyncio.ensure_future(serve())
        for frame in frames:
            await dealer.send(frame)
        await asyncio.wait_for(server, 60)
        return count / (time.perf_counter() - started)
    finally:
        dealer.close(0)
        router.close(0)


async def distro_requests(count: int, concurrency: int) -> float:
    factory = distro.create("zmq")
    server = factory.server(port=0)
    server.get("/customer/{id}", lambda m: {"id": m.params["id"], "total": 12})
    async with server, factory.client(port=server.address[1]) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                await client.request(distro.message({"uri": "/customer/7"}), timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        return (count // concurrency * concurrency) / (time.perf_counter() - started)


async def raw_requests(count: int, concurrency: int) -> float:
    ctx = zmq.asyncio.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    waiting: dict[str, asyncio.Future[Any]] = {}
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        while True:
            identity, data = await router.recv_multipart()
            msg = orjson.loads(data)
            reply = {
                "id": msg["id"],
                "headers": {"uri": "REPLY", "inReplyTo": msg["id"]},
                "payload": {"id": "7", "total": 12},
            }
            await router.send_multipart([identity, orjson.dumps(reply)])

    async def read() -> None:
        while True:
            reply = orjson.loads(await dealer.recv())
            waiting.pop(reply["headers"]["inReplyTo"]).set_result(reply)

    async def worker(n: int) -> None:
        for _ in range(n):
            msg = distro.message({"uri": "/customer/7"})
            data = orjson.dumps(
                {"id": msg.id, "headers": {**msg.headers, "replyTo": "r"}, "payload": None}
            )
            future = loop.create_future()
            waiting[msg.id] = future
            await dealer.send(data)
            await asyncio.wait_for(future, 10)

    tasks = [asyncio.ensure_future(serve()), asyncio.ensure_future(read())]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        return (count // concurrency * concurrency) / (time.perf_counter() - started)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dealer.close(0)
        router.close(0)


def best(rounds: int, make: Callable[[], Awaitable[float]]) -> float:
    return max(asyncio.run(make()) for _ in range(rounds))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, r = args.count, args.rounds
    rows = [
        (
            "one-way send -> handler",
            best(r, lambda: distro_one_way(n)),
            best(r, lambda: raw_one_way(n, True)),
            best(r, lambda: raw_one_way(n, False)),
        ),
        (
            "request/reply, 1 in flight",
            best(r, lambda: distro_requests(n // 4, 1)),
            best(r, lambda: raw_requests(n // 4, 1)),
            None,
        ),
        (
            "request/reply, 64 in flight",
            best(r, lambda: distro_requests(n, 64)),
            best(r, lambda: raw_requests(n, 64)),
            None,
        ),
    ]
    print(f"{'msgs/s':28} {'distro zmq':>12} {'raw + JSON':>12} {'ratio':>6} {'raw bytes':>12}")
    for name, ours, raw, ceiling in rows:
        extra = f"{ceiling:12.0f}" if ceiling else f"{'':>12}"
        print(f"{name:28} {ours:12.0f} {raw:12.0f} {ours / raw:6.2f} {extra}")


if __name__ == "__main__":
    main()
