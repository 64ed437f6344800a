"""The Redis Streams row: a consumer group of two members, each in a process of its own.

The scenario's receiver process starts the two consumers (two more processes, ``spawn``),
waits until both are ready, and counts for them: each consumer counts its arrivals in a slot of
shared memory (as :class:`harness.Counter` does, refreshed every 16 arrivals and at the end);
the receiver is done when the sum reaches what the sender sent (or arrivals stop). Every
implementation (distro, raw redis-py, FastStream) plugs two functions into it: a consumer and
a sender, on a stream (and group) unique to the run.

distro's side is here too: two servers made with ``group="bench"`` on the ``redis-streams``
transport, and a client that awaits ``client.send`` per message, as a user writes it.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Callable
from typing import Any

from harness import (
    _CTX,
    IDLE_AFTER_SENDER,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    Paced,
    Shared,
    payload,
    rss_kib,
)

GROUP = "bench"
MEMBERS = 2


class Slot:
    """One consumer's count in shared memory."""

    def __init__(self) -> None:
        self.n = _CTX.RawValue(ctypes.c_long, 0)
        self.last = _CTX.RawValue(ctypes.c_double, 0.0)
        self.ready = _CTX.RawValue(ctypes.c_int, 0)
        self.stop = _CTX.RawValue(ctypes.c_int, 0)


class SlotCounter:
    """What a consumer does per message after decoding it (the same as harness.Counter)."""

    __slots__ = ("last", "n", "slot")

    def __init__(self, slot: Slot) -> None:
        self.n = 0
        self.last = 0.0
        self.slot = slot

    def hit(self) -> None:
        n = self.n = self.n + 1
        self.last = time.perf_counter()
        if not n & 15:
            self.slot.n.value = n
            self.slot.last.value = self.last

    def publish(self) -> None:
        """The final count."""
        self.slot.n.value = self.n
        self.slot.last.value = self.last


Consumer = Callable[[dict[str, Any], Slot, int], None]


def _member(consumer: Consumer, params: dict[str, Any], slot: Slot, index: int) -> None:
    consumer(params, slot, index)


async def until_stopped(slot: Slot, counter: SlotCounter, deadline: float) -> None:
    """A consumer's wait: until the receiver sets the slot's stop flag (or the deadline)."""
    while not slot.stop.value and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
        counter.publish()
    counter.publish()


def run_group(
    consumer: Consumer,
    params: dict[str, Any],
    shared: Shared,
    results: Any,
    keys: tuple[str, ...] = (),
) -> None:
    """The receiver of a scenario: runs ``consumer`` in :data:`MEMBERS` processes and counts
    for them (``consumer`` must be a module-level function: it is pickled); then deletes
    ``keys`` (the run's stream), so that runs leave nothing behind in Redis."""
    slots = [Slot() for _ in range(MEMBERS)]
    procs = [
        _CTX.Process(target=_member, args=(consumer, params, slot, i))
        for i, slot in enumerate(slots)
    ]
    for proc in procs:
        proc.start()
    deadline = time.perf_counter() + params["timeout"]
    try:
        while not all(s.ready.value for s in slots):
            if time.perf_counter() > deadline or any(p.exitcode for p in procs):
                raise RuntimeError("a consumer of the group did not start")
            time.sleep(0.01)
        results.put(("ready", [REDIS_URL]))
        seen, since = -1, time.perf_counter()
        while True:
            time.sleep(0.005)
            total = sum(s.n.value for s in slots)
            shared.received.value = total
            sent = shared.sent.value
            now = time.perf_counter()
            if sent >= 0 and total >= sent:
                break
            if total != seen:
                seen, since = total, now
            elif sent >= 0 and now - since > IDLE_AFTER_SENDER:
                break
            if now > deadline or any(p.exitcode for p in procs):
                break
    finally:
        for slot in slots:
            slot.stop.value = 1
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(5.0)
        if keys:
            import redis

            with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
                client.delete(*keys)
    counts = [s.n.value for s in slots]
    results.put(
        (
            "receiver",
            {
                "received": sum(counts),
                "t_last": max(s.last.value for s in slots),
                "per_member": counts,
                "rss_kib": rss_kib(),
            },
        )
    )


# -- distro ------------------------------------------------------------------------------------


def _prefix(params: dict[str, Any]) -> str:
    return f"distro-bench-{params['uri'].split('/')[2]}:"


def distro_consumer(params: dict[str, Any], slot: Slot, index: int) -> None:
    import distro_core as distro

    async def main() -> None:
        factory = distro.create("redis-streams")
        server = factory.server(url=REDIS_URL, prefix=_prefix(params), group=GROUP)
        counter = SlotCounter(slot)
        hit = counter.hit

        @server.post(params["uri"])
        def on_message(msg: distro.Message) -> None:
            hit()

        async with server:
            slot.ready.value = 1
            await until_stopped(slot, counter, time.perf_counter() + params["timeout"])

    asyncio.run(main())


def distro_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    import distro_core as distro

    async def main() -> None:
        factory = distro.create("redis-streams")
        message = distro.message
        async with factory.client(url=REDIS_URL, prefix=_prefix(params)) as client:
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
        results.put(("sender", report))

    asyncio.run(main())


def distro_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    prefix = _prefix(params)
    run_group(
        distro_consumer,
        params,
        shared,
        results,
        keys=(f"{prefix}distro.stream", f"{prefix}distro.routes"),
    )
