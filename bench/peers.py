"""Peers on the same Redis, used as their documentation shows: FastStream's ``RedisBroker``
(pub/sub, and ``broker.request``) and Kombu (a queue over Redis; Kombu is synchronous, so each
side runs a blocking loop in its own process). Each message has the same shape and a fresh id."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from harness import (
    REDIS_URL,
    Counter,
    DoneWatch,
    Paced,
    Shared,
    payload,
    receiver_report,
    rr_phases,
    wait_done,
    wait_stop,
)


def _body(uri: str, seq: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "headers": {"uri": uri, "verb": "POST"},
        "payload": payload(seq),
    }


# -- FastStream --------------------------------------------------------------------------------


def faststream_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    from faststream.redis import RedisBroker

    async def main() -> None:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it
        counter = Counter(shared)
        hit = counter.hit

        @broker.subscriber(params["uri"])  # type: ignore[untyped-decorator]
        async def on_message(msg: dict[str, Any]) -> None:
            hit()

        await broker.start()
        try:
            results.put(("ready", [REDIS_URL]))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        finally:
            await broker.stop()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def faststream_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    from faststream.redis import RedisBroker

    async def main() -> None:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it
        await broker.connect()
        channel = uri = params["uri"]
        count = params["count"]
        publish = broker.publish
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            await publish(_body(uri, n), channel=channel)
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        await broker.stop()
        results.put(("sender", report))

    asyncio.run(main())


def faststream_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    from faststream.redis import RedisBroker

    async def main() -> None:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it

        @broker.subscriber(params["uri"])  # type: ignore[untyped-decorator]
        async def echo(msg: dict[str, Any]) -> dict[str, Any]:
            return {
                "id": str(uuid.uuid4()),
                "headers": {"uri": "REPLY", "inReplyTo": msg["id"]},
                "payload": msg["payload"],
            }

        await broker.start()
        try:
            results.put(("ready", [REDIS_URL]))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
        finally:
            await broker.stop()
        results.put(("receiver", {}))

    asyncio.run(main())


def faststream_client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    from faststream.redis import RedisBroker

    async def main() -> dict[str, Any]:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it
        await broker.connect()
        channel = uri = params["uri"]
        timeouts = 0

        async def request(seq: int) -> None:
            nonlocal timeouts
            try:
                response = await broker.request(_body(uri, seq), channel=channel, timeout=1.0)
                await response.decode()
            except TimeoutError:
                timeouts += 1

        try:
            return await rr_phases(request, params, lambda: timeouts)
        finally:
            await broker.stop()

    results.put(("sender", asyncio.run(main())))


# -- Kombu -------------------------------------------------------------------------------------


def _kombu_queue(name: str) -> Any:
    import kombu

    # kombu ships no type hints.
    exchange = kombu.Exchange(name, type="direct")  # type: ignore[attr-defined,no-untyped-call]
    return kombu.Queue(name, exchange, routing_key=name)  # type: ignore[attr-defined,no-untyped-call]


def kombu_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    from kombu import Connection  # type: ignore[attr-defined]

    name = params["uri"]
    queue = _kombu_queue(name)
    counter = Counter(shared)
    hit = counter.hit

    def on_message(body: Any, message: Any) -> None:
        message.ack()
        hit()

    deadline = time.perf_counter() + params["timeout"]
    with Connection(REDIS_URL) as conn:  # type: ignore[no-untyped-call]
        try:
            with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
                results.put(("ready", [REDIS_URL]))
                watch = DoneWatch(counter, shared, deadline)
                while not watch.done():
                    try:
                        conn.drain_events(timeout=0.05)
                    except TimeoutError:
                        pass
        finally:
            queue(conn.default_channel).delete()
            conn.default_channel.client.delete(f"_kombu.binding.{name}")
    results.put(("receiver", receiver_report(counter, shared)))


def kombu_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    from kombu import Connection  # type: ignore[attr-defined]

    name = uri = params["uri"]
    queue = _kombu_queue(name)
    count = params["count"]
    burst = params.get("burst", 64)
    with Connection(REDIS_URL) as conn:  # type: ignore[no-untyped-call]
        producer = conn.Producer(serializer="json")
        publish = producer.publish
        exchange = queue.exchange
        # Pacing without an event loop: the same burst/time bound as every other sender.
        t0 = time.perf_counter()
        shared.t0.value = t0
        stop_at = t0 + params["seconds"]
        n = 0
        while n < count:
            publish(
                _body(uri, n), exchange=exchange, routing_key=name, declare=[queue] if not n else []
            )
            n += 1
            if not n % burst and time.perf_counter() > stop_at:
                break
        elapsed = time.perf_counter() - t0
        shared.sent.value = n
    results.put(("sender", {"sent": n, "send_elapsed": elapsed, "t0": t0}))


# -- FastStream, Redis Streams: a consumer group of two ----------------------------------------


def faststream_streams_consumer(params: dict[str, Any], slot: Any, index: int) -> None:
    """One member: ``StreamSub(stream, group=..., consumer=...)``, as FastStream documents."""
    from faststream.redis import RedisBroker, StreamSub
    from streams import GROUP, SlotCounter, until_stopped

    async def main() -> None:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it
        counter = SlotCounter(slot)
        hit = counter.hit
        sub = StreamSub(params["uri"], group=GROUP, consumer=f"fs-{index}")

        @broker.subscriber(stream=sub)  # type: ignore[untyped-decorator]
        async def on_message(msg: dict[str, Any]) -> None:
            hit()

        await broker.start()
        try:
            slot.ready.value = 1
            await until_stopped(slot, counter, time.perf_counter() + params["timeout"])
        finally:
            await broker.stop()

    asyncio.run(main())


def faststream_streams_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    from streams import run_group

    run_group(faststream_streams_consumer, params, shared, results, keys=(params["uri"],))


def faststream_streams_sender(
    params: dict[str, Any], address: Any, shared: Shared, results: Any
) -> None:
    from faststream.redis import RedisBroker

    async def main() -> None:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it
        await broker.connect()
        stream = uri = params["uri"]
        count = params["count"]
        publish = broker.publish
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            await publish(_body(uri, n), stream=stream)
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        await broker.stop()
        results.put(("sender", report))

    asyncio.run(main())
