"""The bounce tables (``redis-bounce``, ``nats-bounce``): FastStream's own benchmark shape.

FastStream's benchmark (``benchmarks/`` in its repository) is one process whose subscriber
publishes every message it gets again, to the subject it listens on, after one message started
it; it counts the handler calls in a fixed time. Each side awaits every publish, so with one
message bouncing nothing can be batched: every bounce is a full trip through the broker. The
one-way rows of the ``redis`` and ``nats`` tables are the other shape (a publisher pipelining as
fast as it can); these tables show the ratios where distro's write batching cannot help
(1 in flight) and where it can again (32 messages bouncing at once).

Every column runs the same scenario through :func:`harness.run_pair`:

* the receiver is the *bouncer*: one process subscribed to the run's channel (subject) whose
  handler counts each message (:class:`harness.Counter`) and, while the scenario runs, builds a
  fresh message (new id, the payload it got) and awaits publishing it to that same channel;
* the sender is :func:`go`, which only tells the bouncer to start (so that starting a process
  does not share the cores with the measurement) and ends;
* the bouncer then publishes the first ``inflight`` messages itself (1 or 32), lets them bounce
  ``warmup`` times, counts for ``min(seconds, BOUNCE_SECONDS)`` seconds, stops re-sending, and
  waits for the messages still in flight. Its report carries ``t0`` (the start of the count),
  ``received`` (handler calls since) and ``sent`` (what those handler calls account for plus
  whatever never arrived), so :func:`scenarios.measure` reads a bounce as it reads a one-way
  run: handler calls per second, and a loss if any.

The columns: distro (a server's async ``POST`` handler awaiting ``client.send(distro.message
(...))`` to its own uri, with a client of the same process), raw redis-py / nats-py (an awaited
publish of an ``orjson``-encoded message in the subscription's handler) and FastStream
(``await broker.publish(dict, channel)`` inside a ``@broker.subscriber``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from harness import (
    IDLE_AFTER_SENDER,
    NATS_URL,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    Counter,
    Shared,
    payload,
    raw_message,
    rss_kib,
)

if TYPE_CHECKING:
    from scenarios import Table

BOUNCE_SECONDS = 2.0
"""How long a bounce is counted: this, or the run's ``seconds`` when shorter (``--quick``)."""

IN_FLIGHT = (1, 32)
"""The rows: messages bouncing at once."""

WARMUP_BOUND = 10.0
"""Seconds the warm-up bounces may take at most (a bounce that died shows as a loss)."""


class Bounce:
    """A bouncer's bookkeeping, the same for every implementation.

    The handler of every column does, per message, after decoding it::

        hit()
        if bounce.running:
            bounce.sent += 1
            await publish(fresh message with the payload it got)

    :meth:`run` does the rest: the start signal, the first messages, the warm-up, the count.
    """

    __slots__ = ("counter", "params", "running", "sent", "shared")

    def __init__(self, shared: Shared, params: dict[str, Any]) -> None:
        self.shared = shared
        self.params = params
        self.counter = Counter(shared)
        self.running = True
        self.sent = 0  # every publish attempted: the first messages and the re-sends

    async def run(self, kick: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
        """Wait for :func:`go`, publish the first messages with ``kick(seq)``, count; returns
        the receiver's report."""
        params, shared, counter = self.params, self.shared, self.counter
        clock = time.perf_counter
        deadline = clock() + params["timeout"]
        # Another process sets the flag: shared memory cannot wake an asyncio.Event, so poll.
        while not shared.phase.value and clock() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for seq in range(params["inflight"]):
            self.sent += 1
            await kick(seq)
        warm_until = min(deadline, clock() + WARMUP_BOUND)
        while counter.n < params["warmup"] and clock() < warm_until:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        t0 = clock()
        n0 = counter.n
        cpu0 = time.process_time()
        await asyncio.sleep(min(params["seconds"], BOUNCE_SECONDS))
        self.running = False
        cpu = time.process_time() - cpu0
        counted = counter.n - n0
        # The messages still in flight arrive and are not sent again.
        seen, since = -1, clock()
        while counter.n < self.sent and clock() < deadline:
            await asyncio.sleep(0.005)
            if counter.n != seen:
                seen, since = counter.n, clock()
            elif clock() - since > IDLE_AFTER_SENDER:
                break
        received = counter.n - n0
        shared.received.value = counter.n
        return {
            "received": received,
            "sent": received + (self.sent - counter.n),
            "t0": t0,
            "t_last": counter.last,
            "warmup": n0,
            # This process's CPU time per handler call while counting (for profiling by hand:
            # the broker's share of the two cores is not in it).
            "cpu_us": cpu / counted * 1e6 if counted else float("nan"),
            "rss_kib": rss_kib(),
        }


def go(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """The sender of every bounce scenario: tells the bouncer to start, and ends."""
    shared.phase.value = 1
    results.put(("sender", {}))


def _body(uri: str, data: Any) -> dict[str, Any]:
    """What a raw or FastStream bouncer publishes: a fresh message carrying ``data``."""
    return {"id": str(uuid.uuid4()), "headers": {"uri": uri, "verb": "POST"}, "payload": data}


# -- distro ------------------------------------------------------------------------------------


def distro_bouncer(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """A server whose async ``POST`` handler awaits ``client.send`` of a fresh message to its
    own uri, the client in the same process; over ``params["transport"]`` (redis or nats)."""
    from distro_side import client_options, server_options

    import distro_core as distro

    async def main() -> dict[str, Any]:
        name = params["transport"]
        factory = distro.create(name)
        server = factory.server(**server_options(name, params))
        message = distro.message
        headers = {"uri": params["uri"], "verb": "POST"}
        bounce = Bounce(shared, params)
        hit = bounce.counter.hit
        async with factory.client(**client_options(name, None, params)) as client:
            send = client.send

            @server.post(params["uri"])
            async def on_message(msg: distro.Message) -> None:
                hit()
                if bounce.running:
                    bounce.sent += 1
                    await send(message(headers, msg.payload))

            async with server:
                results.put(("ready", list(server.address)))
                report = await bounce.run(lambda seq: send(message(headers, payload(seq))))
                report["dropped"] = dict(server.stats.dropped)
        return report

    results.put(("receiver", asyncio.run(main())))


# -- Redis pub/sub -----------------------------------------------------------------------------


def raw_redis_bouncer(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """redis-py asyncio: a ``SUBSCRIBE``d connection read in a loop, each message decoded with
    orjson and a fresh one ``await conn.publish(channel, ...)``-ed (a pooled connection; the
    reply, the number of subscribers, is awaited as redis-py does)."""
    import contextlib

    import orjson
    from raw_redis import _client, _subscribe

    async def main() -> dict[str, Any]:
        conn = _client()
        channel = uri = params["uri"]
        pubsub = await _subscribe(conn, channel)
        publish = conn.publish
        loads, dumps = orjson.loads, orjson.dumps
        bounce = Bounce(shared, params)
        hit = bounce.counter.hit

        async def reader() -> None:
            async for item in pubsub.listen():
                if item["type"] != "message":
                    continue
                got = loads(item["data"])
                hit()
                if bounce.running:
                    bounce.sent += 1
                    await publish(channel, dumps(_body(uri, got["payload"])))

        task = asyncio.create_task(reader())
        await conn.ping()  # the publishing connection is open before the count
        results.put(("ready", [REDIS_HOST, REDIS_PORT]))
        try:
            return await bounce.run(lambda seq: publish(channel, raw_message(uri, seq)))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pubsub.aclose()
            await conn.aclose()

    results.put(("receiver", asyncio.run(main())))


def faststream_redis_bouncer(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """FastStream's ``RedisBroker``: a ``@broker.subscriber(channel)`` taking the dict and
    awaiting ``broker.publish(dict, channel=channel)``."""
    from faststream.redis import RedisBroker

    async def main() -> dict[str, Any]:
        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]  # silence it
        channel = uri = params["uri"]
        publish = broker.publish
        bounce = Bounce(shared, params)
        hit = bounce.counter.hit

        @broker.subscriber(channel)  # type: ignore[untyped-decorator]
        async def on_message(msg: dict[str, Any]) -> None:
            hit()
            if bounce.running:
                bounce.sent += 1
                await publish(_body(uri, msg["payload"]), channel=channel)

        await broker.start()
        try:
            results.put(("ready", [REDIS_URL]))
            return await bounce.run(lambda seq: publish(_body(uri, payload(seq)), channel=channel))
        finally:
            await broker.stop()

    results.put(("receiver", asyncio.run(main())))


# -- NATS --------------------------------------------------------------------------------------


def raw_nats_bouncer(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """nats-py: ``nc.subscribe(subject, cb=...)`` whose coroutine callback decodes each message
    with orjson and awaits ``nc.publish(subject, ...)`` of a fresh one (no flush per message:
    nats-py's flusher task writes what accumulated, as in the ``nats`` table)."""
    import nats
    import orjson
    from raw_nats import subject

    async def main() -> dict[str, Any]:
        nc = await nats.connect(NATS_URL)
        subj = subject(params)
        uri = params["uri"]
        publish = nc.publish
        loads, dumps = orjson.loads, orjson.dumps
        bounce = Bounce(shared, params)
        hit = bounce.counter.hit

        async def on_msg(msg: Any) -> None:
            got = loads(msg.data)
            hit()
            if bounce.running:
                bounce.sent += 1
                await publish(subj, dumps(_body(uri, got["payload"])))

        await nc.subscribe(subj, cb=on_msg)
        await nc.flush()  # the SUB has reached the server before the first message
        results.put(("ready", [NATS_URL]))
        try:
            return await bounce.run(lambda seq: publish(subj, raw_message(uri, seq)))
        finally:
            await nc.close()

    results.put(("receiver", asyncio.run(main())))


def faststream_nats_bouncer(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """FastStream's ``NatsBroker``: a ``@broker.subscriber(subject)`` taking the dict and
    awaiting ``broker.publish(dict, subject)``."""
    from faststream.nats import NatsBroker
    from raw_nats import subject

    async def main() -> dict[str, Any]:
        broker = NatsBroker(NATS_URL, logger=None)
        subj = subject(params)
        uri = params["uri"]
        publish = broker.publish
        bounce = Bounce(shared, params)
        hit = bounce.counter.hit

        @broker.subscriber(subj)
        async def on_message(msg: dict[str, Any]) -> None:
            hit()
            if bounce.running:
                bounce.sent += 1
                await publish(_body(uri, msg["payload"]), subj)

        await broker.start()
        try:
            results.put(("ready", [NATS_URL]))
            return await bounce.run(lambda seq: publish(_body(uri, payload(seq)), subj))
        finally:
            await broker.stop()

    results.put(("receiver", asyncio.run(main())))


# -- the tables --------------------------------------------------------------------------------


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _table(
    name: str,
    title: str,
    transport: str,
    raw: tuple[str, str, Callable[..., None]],
    faststream: tuple[str, Callable[..., None]],
    remarks: list[str],
) -> Table:
    """A bounce table: rows ``bounces/s (N in flight)``, columns distro, raw, FastStream.

    :param raw: the raw column's label, the module it needs, its bouncer.
    :param faststream: the FastStream extra (``faststream[redis]``), its bouncer.
    """
    import scenarios
    from scenarios import Impl

    import distro_core as distro

    class BounceTable(scenarios.Table):
        """A table whose one-way modes are bounces: named for what they count."""

        def rows(self) -> list[scenarios.Row]:
            return [
                scenarios.Row(f"oneway:{mode}", f"bounces/s ({mode})", "msg/s", True)
                for mode, _ in self.oneway_modes
            ]

    if transport in distro.transports():
        impls = [Impl("distro", oneway=(distro_bouncer, go), params={"transport": transport})]
    else:
        impls = [Impl("distro", missing=f"transport {transport!r} not available (not installed)")]
    label, module, bouncer = raw
    if _have(module):
        impls.append(Impl(label, oneway=(bouncer, go)))
    else:
        impls.append(Impl(label, missing=f"{module} not installed"))
    extra, fs_bouncer = faststream
    if _have("faststream", module):
        impls.append(Impl("FastStream", oneway=(fs_bouncer, go)))
    else:
        impls.append(Impl("FastStream", missing=f"{extra} not installed"))
    table = BounceTable(
        name,
        title,
        impls,
        [(f"{n} in flight", {"inflight": n}) for n in IN_FLIGHT],
    )
    table.remarks += remarks
    return table


_SHAPE = (
    "FastStream's own benchmark shape: one process whose handler, for each message it gets, "
    "builds a fresh ~150-byte message with the payload it got and awaits publishing it to the "
    "channel it listens on; it starts with 1 (or 32) messages of its own, lets them bounce the "
    "run's warm-up count (500; 50 with --quick), then the rate is handler calls per second "
    f"over {BOUNCE_SECONDS:g} s (--seconds if shorter); a second process only gives the start "
    "signal. With 1 in flight every bounce is a full trip through the broker and back, and "
    "nothing can be batched"
)


def redis_table(name: str) -> Table:
    """The ``redis-bounce`` table: distro-redis, redis-py and FastStream's ``RedisBroker``."""
    return _table(
        name,
        f"{name}: one message bounced through Redis pub/sub by its own subscriber, distro vs "
        f"redis-py and FastStream on {REDIS_URL}",
        "redis",
        ("raw redis-py", "redis", raw_redis_bouncer),
        ("faststream[redis]", faststream_redis_bouncer),
        [
            _SHAPE,
            "distro: a server's async POST handler awaiting client.send(distro.message(...)) "
            "to its own uri (send returns once the PUBLISH is queued; the PUBLISHes of one loop "
            "iteration go out in one write, and async handlers run concurrently); raw redis-py: "
            "a loop over pubsub.listen() awaiting conn.publish(channel, orjson.dumps(...)) per "
            "message (redis-py waits for Redis' reply to each PUBLISH); FastStream: "
            "@broker.subscriber(channel) awaiting broker.publish(dict, channel=...). The raw and "
            "FastStream handlers take one message at a time, so with 32 in flight they still "
            "wait for one PUBLISH reply per message: that row is where distro's batching helps",
        ],
    )


def nats_table(name: str) -> Table:
    """The ``nats-bounce`` table: distro-nats, nats-py and FastStream's ``NatsBroker``."""
    return _table(
        name,
        f"{name}: one message bounced through NATS by its own subscriber, distro vs nats-py "
        f"and FastStream's NatsBroker on {NATS_URL}",
        "nats",
        ("raw nats-py", "nats", raw_nats_bouncer),
        ("faststream[nats]", faststream_nats_bouncer),
        [
            _SHAPE,
            "distro: a server's async POST handler awaiting client.send(distro.message(...)) "
            "to its own uri; raw nats-py: a subscribe(cb=...) coroutine awaiting "
            "nc.publish(subject, orjson.dumps(...)); FastStream: @broker.subscriber(subject) "
            "awaiting broker.publish(dict, subject). No NATS publish waits for the server "
            "(nats-py's flusher task writes what accumulated), so with 32 in flight every "
            "column can batch its writes; nats-py runs a subscription's callbacks one at a "
            "time, distro its async handlers concurrently",
        ],
    )
