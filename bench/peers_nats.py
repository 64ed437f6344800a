"""FastStream's ``NatsBroker`` on the same NATS, used as its documentation shows: a
``@broker.subscriber(subject)`` coroutine taking the decoded dict (``queue="bench"`` for the
queue group), one ``await broker.publish(body, subject)`` per message, ``broker.request`` for
request/reply with the subscriber returning the reply. Each message has the same shape and a
fresh id (:func:`peers._body`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness import (
    NATS_URL,
    Counter,
    Paced,
    Shared,
    receiver_report,
    rr_phases,
    wait_done,
    wait_stop,
)
from peers import _body
from raw_nats import QUEUE, subject


def _broker() -> Any:
    from faststream.nats import NatsBroker

    return NatsBroker(NATS_URL, logger=None)


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """One subscriber process, or (``params["group"]``) a queue group of two."""
    if params.get("group"):
        from streams import run_group

        run_group(group_member, params, shared, results)
        return

    async def main() -> None:
        broker = _broker()
        counter = Counter(shared)
        hit = counter.hit

        @broker.subscriber(subject(params))  # type: ignore[untyped-decorator]
        async def on_message(msg: dict[str, Any]) -> None:
            hit()

        await broker.start()
        try:
            results.put(("ready", [NATS_URL]))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        finally:
            await broker.stop()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def group_member(params: dict[str, Any], slot: Any, index: int) -> None:
    """One member of FastStream's queue group."""
    from streams import SlotCounter, until_stopped

    async def main() -> None:
        broker = _broker()
        counter = SlotCounter(slot)
        hit = counter.hit

        @broker.subscriber(subject(params), queue=QUEUE)  # type: ignore[untyped-decorator]
        async def on_message(msg: dict[str, Any]) -> None:
            hit()

        await broker.start()
        try:
            slot.ready.value = 1
            await until_stopped(slot, counter, time.perf_counter() + params["timeout"])
        finally:
            await broker.stop()

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        broker = _broker()
        await broker.connect()
        subj = subject(params)
        uri = params["uri"]
        count = params["count"]
        publish = broker.publish
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            await publish(_body(uri, n), subj)
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        await broker.stop()
        results.put(("sender", report))

    asyncio.run(main())


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    import uuid

    async def main() -> None:
        broker = _broker()

        @broker.subscriber(subject(params))  # type: ignore[untyped-decorator]
        async def echo(msg: dict[str, Any]) -> dict[str, Any]:
            return {
                "id": str(uuid.uuid4()),
                "headers": {"uri": "REPLY", "inReplyTo": msg["id"]},
                "payload": msg["payload"],
            }

        await broker.start()
        try:
            results.put(("ready", [NATS_URL]))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
        finally:
            await broker.stop()
        results.put(("receiver", {}))

    asyncio.run(main())


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        broker = _broker()
        await broker.connect()
        subj = subject(params)
        uri = params["uri"]
        timeouts = 0

        async def request(seq: int) -> None:
            nonlocal timeouts
            try:
                response = await broker.request(_body(uri, seq), subj, timeout=1.0)
                await response.decode()
            except TimeoutError:
                timeouts += 1

        try:
            return await rr_phases(request, params, lambda: timeouts)
        finally:
            await broker.stop()

    results.put(("sender", asyncio.run(main())))
