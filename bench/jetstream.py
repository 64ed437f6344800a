"""The JetStream table: distro's ``jetstream`` transport vs raw nats-py JetStream, two rows.

* **publish** (acknowledged, 64 in flight): one publisher process; the other process makes
  sure the stream exists, waits until the publisher is done, then polls the stream's message
  count until everything sent is stored, and stamps that moment as the last arrival (the
  same for both columns). raw: ``js = nc.jetstream(publish_async_max_pending=64)``,
  ``await js.publish_async(subject, data)`` per message (at most 64 PubAcks awaited at once;
  a failed PubAck is counted), ``await js.publish_async_completed()`` at the end. distro:
  ``await client.send(msg)`` per message on a client made with ``max_unacked=64`` (each send
  carries a ``Nats-Msg-Id`` and the client keeps at most 64 PubAcks outstanding).
* **consume** (durable pull consumer): the publisher fills the stream first; once all is
  stored the consumer process starts timing (``t0``), makes its durable consumer and reads
  everything. raw: ``js.pull_subscribe(filter, durable=...)``, ``fetch(100)`` in a loop,
  orjson per message and ``await msg.ack()`` for each. distro: a server made with
  ``group="bench"`` (the group's durable consumer) whose POST handler counts; it pulls and
  acknowledges as the transport does by default.

Streams are unique per run (file storage, as distro's default) and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import nats
import nats.errors
import nats.js.errors
import orjson
from harness import NATS_URL, Counter, Paced, Shared, payload, raw_message, rss_kib

IN_FLIGHT = 64
FETCH = 100
GROUP = "bench"
_loads = orjson.loads


def _token(params: dict[str, Any]) -> str:
    return params["uri"].split("/")[2]


def _raw_names(params: dict[str, Any]) -> tuple[str, str]:
    """The raw stream's name and the subject published on."""
    token = _token(params)
    return f"BENCHJS_{token}", f"benchjs.{token}.m"


def _distro_prefix(params: dict[str, Any]) -> str:
    return f"distro-benchjs-{_token(params)}"


def _distro_streams(params: dict[str, Any]) -> list[str]:
    from distro_nats._jetstream_config import dead_stream_name, routes_stream_name, stream_name

    name = stream_name(_distro_prefix(params))
    return [name, routes_stream_name(name), dead_stream_name(name)]


async def _stored(js: Any, stream: str) -> int:
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return 0
    return int(info.state.messages)


async def _wait_stored(js: Any, stream: str, shared: Shared, deadline: float) -> tuple[int, float]:
    """Once the sender is done: poll until the stream holds all it sent (or the deadline)."""
    while shared.sent.value < 0 and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    stored = 0
    while time.perf_counter() < deadline:
        stored = await _stored(js, stream)
        if stored >= shared.sent.value:
            break
        await asyncio.sleep(0.002)
    return stored, time.perf_counter()


async def _delete(js: Any, streams: list[str]) -> None:
    for name in streams:
        with contextlib.suppress(nats.js.errors.NotFoundError, nats.errors.TimeoutError):
            await js.delete_stream(name)


# -- the receiving side (both columns) ---------------------------------------------------------


def raw_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        stream, subject = _raw_names(params)
        await js.add_stream(name=stream, subjects=[subject], storage="file")
        results.put(("ready", [NATS_URL]))
        deadline = time.perf_counter() + params["timeout"]
        try:
            stored, stored_at = await _wait_stored(js, stream, shared, deadline)
            if params["js_mode"] == "publish":
                report = {"received": stored, "t_last": stored_at, "rss_kib": rss_kib()}
            else:
                report = await _raw_consume(js, stream, subject, shared, deadline)
        finally:
            await _delete(js, [stream])
            await nc.close()
        results.put(("receiver", report))

    asyncio.run(main())


async def _raw_consume(
    js: Any, stream: str, subject: str, shared: Shared, deadline: float
) -> dict[str, Any]:
    counter = Counter(shared)
    hit = counter.hit
    sent = shared.sent.value
    t0 = time.perf_counter()
    psub = await js.pull_subscribe(subject, durable=GROUP, stream=stream)
    fetch = psub.fetch
    idle_since = time.perf_counter()
    while counter.n < sent and time.perf_counter() < deadline:
        try:
            msgs = await fetch(FETCH, timeout=0.5)
        except nats.errors.TimeoutError:
            if time.perf_counter() - idle_since > 2.0:
                break
            continue
        for msg in msgs:
            _loads(msg.data)
            hit()
            await msg.ack()
        idle_since = time.perf_counter()
    await psub.unsubscribe()
    shared.received.value = counter.n
    return {"received": counter.n, "t_last": counter.last, "t0": t0, "rss_kib": rss_kib()}


def distro_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    import distro_core as distro

    async def main() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        streams = _distro_streams(params)
        results.put(("ready", [NATS_URL]))  # the client makes the stream, as it does for users
        deadline = time.perf_counter() + params["timeout"]
        try:
            stored, stored_at = await _wait_stored(js, streams[0], shared, deadline)
            if params["js_mode"] == "publish":
                report = {"received": stored, "t_last": stored_at, "rss_kib": rss_kib()}
            else:
                report = await _distro_consume(distro, params, shared, deadline)
        finally:
            await _delete(js, streams)
            await nc.close()
        results.put(("receiver", report))

    asyncio.run(main())


async def _distro_consume(
    distro: Any, params: dict[str, Any], shared: Shared, deadline: float
) -> dict[str, Any]:
    counter = Counter(shared)
    hit = counter.hit
    sent = shared.sent.value
    t0 = time.perf_counter()
    factory = distro.create("jetstream")
    server = factory.server(url=NATS_URL, prefix=_distro_prefix(params), group=GROUP)

    @server.post(params["uri"])
    def on_message(msg: Any) -> None:
        hit()

    async with server:
        seen, since = -1, time.perf_counter()
        while counter.n < sent and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
            if counter.n != seen:
                seen, since = counter.n, time.perf_counter()
            elif time.perf_counter() - since > 2.0:
                break
        dropped = dict(server.stats.dropped)
    shared.received.value = counter.n
    return {
        "received": counter.n,
        "t_last": counter.last,
        "t0": t0,
        "rss_kib": rss_kib(),
        "dropped": dropped,
    }


# -- the publishers ----------------------------------------------------------------------------


def raw_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream(publish_async_max_pending=IN_FLIGHT)
        _, subject = _raw_names(params)
        uri = params["uri"]
        count = params["count"]
        failed = 0

        def check(future: asyncio.Future[Any]) -> None:
            nonlocal failed
            if future.cancelled() or future.exception() is not None:
                failed += 1

        publish = js.publish_async
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            (await publish(subject, raw_message(uri, n))).add_done_callback(check)
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        await asyncio.wait_for(js.publish_async_completed(), 30.0)
        report = paced.finish(n)
        await nc.close()
        results.put(("sender", {**report, "failed": failed}))

    asyncio.run(main())


def distro_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    import distro_core as distro

    async def main() -> None:
        factory = distro.create("jetstream")
        message = distro.message
        options = {"url": NATS_URL, "prefix": _distro_prefix(params), "max_unacked": IN_FLIGHT}
        async with factory.client(**options) as client:
            send = client.send
            headers = {"uri": params["uri"], "verb": "POST"}
            count = params["count"]
            paced = Paced(shared, params)
            paced.start()
            n = 0
            while n < count:
                await send(message(headers, payload(n)))
                n += 1
                if not n % paced.burst and not await paced.pause(n):
                    break
            report = paced.finish(n)
        results.put(("sender", {**report, "unheard": client.stats.unheard}))

    asyncio.run(main())
