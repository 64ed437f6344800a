"""Raw NATS baselines with nats-py, written the way its documentation shows:

* one-way: ``await nc.publish(subject, data)`` per message (nats-py appends the ``PUB`` to its
  write buffer and its flusher task writes it: no flush per message), ``await nc.flush()`` at
  the end; the subscriber is ``await nc.subscribe(subject, cb=on_msg)`` whose coroutine callback
  decodes every message with orjson and counts it;
* a queue group of two: the same, each member subscribed with ``queue="bench"``, each member a
  process of its own (:func:`streams.run_group`);
* request/reply: ``await nc.request(subject, data, timeout=1.0)`` (nats-py's shared response
  inbox), the answering subscription decodes the request and ``await msg.respond(reply)``, the
  client decodes the reply.

Every message is the same ~150-byte JSON a distro message is, built per message
(:func:`harness.raw_message`). Subjects are unique per run, on the NATS at 127.0.0.1:4222.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import nats.errors
import orjson
from harness import (
    NATS_URL,
    Counter,
    Paced,
    Shared,
    raw_message,
    raw_reply,
    receiver_report,
    rr_phases,
    wait_done,
    wait_stop,
)

_loads = orjson.loads
QUEUE = "bench"


def subject(params: dict[str, Any]) -> str:
    """The run's subject: ``bench.<the uri's unique part>`` (or ``params["subject"]``)."""
    return params.get("subject") or "bench." + params["uri"].split("/")[2]


async def _connect() -> Any:
    return await nats.connect(NATS_URL)


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """One subscriber process, or (``params["group"]``) a queue group of two."""
    if params.get("group"):
        from streams import run_group

        run_group(group_member, params, shared, results)
        return

    async def main() -> None:
        nc = await _connect()
        counter = Counter(shared)
        hit = counter.hit

        async def on_msg(msg: Any) -> None:
            _loads(msg.data)
            hit()

        await nc.subscribe(subject(params), cb=on_msg)
        await nc.flush()  # the SUB has reached the server before "ready"
        results.put(("ready", [NATS_URL]))
        await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        await nc.close()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def group_member(params: dict[str, Any], slot: Any, index: int) -> None:
    """One member of the raw queue group (a module-level function: it is pickled)."""
    from streams import SlotCounter, until_stopped

    async def main() -> None:
        nc = await _connect()
        counter = SlotCounter(slot)
        hit = counter.hit

        async def on_msg(msg: Any) -> None:
            _loads(msg.data)
            hit()

        await nc.subscribe(subject(params), queue=QUEUE, cb=on_msg)
        await nc.flush()
        slot.ready.value = 1
        await until_stopped(slot, counter, time.perf_counter() + params["timeout"])
        await nc.close()

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        nc = await _connect()
        subj = subject(params)
        uri = params["uri"]
        count = params["count"]
        publish = nc.publish
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            await publish(subj, raw_message(uri, n))
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        await nc.flush()
        report = paced.finish(n)
        await nc.close()
        results.put(("sender", report))

    asyncio.run(main())


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        nc = await _connect()

        async def on_request(msg: Any) -> None:
            await msg.respond(raw_reply(_loads(msg.data)))

        await nc.subscribe(subject(params), cb=on_request)
        await nc.flush()
        results.put(("ready", [NATS_URL]))
        await wait_stop(shared, time.perf_counter() + params["timeout"])
        await nc.close()
        results.put(("receiver", {}))

    asyncio.run(main())


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        nc = await _connect()
        subj = subject(params)
        uri = params["uri"]
        request_ = nc.request
        timeouts = 0

        async def request(seq: int) -> None:
            nonlocal timeouts
            try:
                reply = await request_(subj, raw_message(uri, seq), timeout=1.0)
                _loads(reply.data)
            except nats.errors.TimeoutError:
                timeouts += 1

        try:
            return await rr_phases(request, params, lambda: timeouts)
        finally:
            await nc.close()

    results.put(("sender", asyncio.run(main())))
