"""Raw Redis baselines with redis-py's asyncio client: PUBLISH (pipelined, one pipeline per
burst) to a SUBSCRIBEd reader that decodes every message with orjson and counts it; and a
request/reply echo over pub/sub, the reply PUBLISHed to the channel the request names (the
echo server pipelines the replies to all the requests it has already read).
Channels are unique per run (the scenario's uri), on the Redis at 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from harness import (
    REDIS_HOST,
    REDIS_PORT,
    Counter,
    Paced,
    RawRequests,
    Shared,
    raw_message,
    raw_reply,
    receiver_report,
    unique_uri,
    wait_done,
    wait_stop,
)

_loads = orjson.loads


def _client() -> aioredis.Redis:
    return aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)


async def _subscribe(conn: aioredis.Redis, channel: str) -> Any:
    pubsub = conn.pubsub()
    await pubsub.subscribe(channel)
    # Wait for the confirmation so that nothing published after "ready" is missed.
    while True:
        got = await pubsub.get_message(timeout=5.0)
        if got is None or got["type"] == "subscribe":
            return pubsub


async def _listen(pubsub: Any, on_data: Any) -> None:
    async for item in pubsub.listen():
        if item["type"] == "message":
            on_data(item["data"])


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        conn = _client()
        pubsub = await _subscribe(conn, params["uri"])
        counter = Counter(shared)
        hit = counter.hit

        def on_data(data: bytes) -> None:
            _loads(data)
            hit()

        reader = asyncio.create_task(_listen(pubsub, on_data))
        results.put(("ready", [REDIS_HOST, REDIS_PORT]))
        await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()
        await conn.aclose()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        conn = _client()
        await conn.ping()
        channel = uri = params["uri"]
        count = params["count"]
        pipe = conn.pipeline(transaction=False)
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            pipe.publish(channel, raw_message(uri, n))
            n += 1
            if not n % paced.burst:
                await pipe.execute()
                if not await paced.pause(n):
                    break
        await pipe.execute()
        report = paced.finish(n)
        await conn.aclose()
        results.put(("sender", report))

    asyncio.run(main())


def naive_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """The naive raw sender: one ``await conn.publish(channel, data)`` per message (a round
    trip to Redis each)."""

    async def main() -> None:
        conn = _client()
        await conn.ping()
        channel = uri = params["uri"]
        count = params["count"]
        publish = conn.publish
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            await publish(channel, raw_message(uri, n))
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        await conn.aclose()
        results.put(("sender", report))

    asyncio.run(main())


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        conn = _client()
        pubsub = await _subscribe(conn, params["uri"])

        async def serve() -> None:
            # Replies to every request already read go out in one pipeline.
            get = pubsub.get_message
            while True:
                item = await get(ignore_subscribe_messages=True, timeout=1.0)
                if item is None:
                    continue
                pipe = conn.pipeline(transaction=False)
                while item is not None:
                    request = _loads(item["data"])
                    pipe.publish(request["headers"]["replyTo"], raw_reply(request))
                    item = await get(ignore_subscribe_messages=True, timeout=0.0)
                await pipe.execute()

        server = asyncio.create_task(serve())
        results.put(("ready", [REDIS_HOST, REDIS_PORT]))
        await wait_stop(shared, time.perf_counter() + params["timeout"])
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        await pubsub.aclose()
        await conn.aclose()
        results.put(("receiver", {}))

    asyncio.run(main())


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        conn = _client()
        reply_channel = unique_uri("reply")
        pubsub = await _subscribe(conn, reply_channel)
        pending: dict[str, asyncio.Future[Any]] = {}

        def on_data(data: bytes) -> None:
            reply = _loads(data)
            future = pending.pop(reply["headers"]["inReplyTo"], None)
            if future is not None and not future.done():
                future.set_result(reply)

        reader = asyncio.create_task(_listen(pubsub, on_data))
        channel = uri = params["uri"]
        publish = conn.publish
        requests = RawRequests(
            pending, uri, reply_channel, lambda data: publish(channel, data), awaits=True
        )
        try:
            return await requests.run(params)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await pubsub.aclose()
            await conn.aclose()

    results.put(("sender", asyncio.run(main())))


# -- Redis Streams: a consumer group of two ----------------------------------------------------


def streams_consumer(params: dict[str, Any], slot: Any, index: int) -> None:
    """One member of the raw group: XREADGROUP COUNT 100, orjson per entry, XACK per batch."""
    import redis.exceptions
    from streams import GROUP, SlotCounter

    async def main() -> None:
        conn = _client()
        stream = params["uri"]
        try:
            await conn.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        counter = SlotCounter(slot)
        hit = counter.hit
        name = f"raw-{index}"
        slot.ready.value = 1
        deadline = time.perf_counter() + params["timeout"]
        while not slot.stop.value and time.perf_counter() < deadline:
            got = await conn.xreadgroup(GROUP, name, {stream: ">"}, count=100, block=100)
            if not got:
                counter.publish()
                continue
            ids = []
            for _, entries in got:
                for entry_id, fields in entries:
                    _loads(fields[b"msg"])
                    hit()
                    ids.append(entry_id)
            await conn.xack(stream, GROUP, *ids)
        counter.publish()
        await conn.aclose()

    asyncio.run(main())


def streams_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    from streams import run_group

    run_group(streams_consumer, params, shared, results, keys=(params["uri"],))


def streams_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """XADD pipelined: one pipeline per burst of 64."""

    async def main() -> None:
        conn = _client()
        await conn.ping()
        stream = uri = params["uri"]
        count = params["count"]
        pipe = conn.pipeline(transaction=False)
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            pipe.xadd(stream, {"msg": raw_message(uri, n)})
            n += 1
            if not n % paced.burst:
                await pipe.execute()
                if not await paced.pause(n):
                    break
        await pipe.execute()
        report = paced.finish(n)
        await conn.aclose()
        results.put(("sender", report))

    asyncio.run(main())
