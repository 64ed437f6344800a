"""distro's side of the NATS tables, as a user writes it (see :mod:`distro_side`).

One-way and request/reply are :mod:`distro_side`'s functions on the ``nats`` transport; the
queue group is two servers made with ``group="bench"``, each a process of its own
(:func:`streams.run_group`), counting in a plain ``POST`` handler.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import distro_side
from harness import Shared

QUEUE = "bench"


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """One server process, or (``params["group"]``) a queue group of two."""
    if params.get("group"):
        from streams import run_group

        run_group(group_member, params, shared, results)
        return
    distro_side.receiver(params, shared, results)


def group_member(params: dict[str, Any], slot: Any, index: int) -> None:
    """One member of distro's queue group."""
    from streams import SlotCounter, until_stopped

    import distro_core as distro

    async def main() -> None:
        name = params["transport"]
        factory = distro.create(name)
        server = factory.server(**distro_side.server_options(name, params), group=QUEUE)
        counter = SlotCounter(slot)
        hit = counter.hit

        @server.post(params["uri"])
        def on_message(msg: distro.Message) -> None:
            hit()

        async with server:
            slot.ready.value = 1
            await until_stopped(slot, counter, time.perf_counter() + params["timeout"])

    asyncio.run(main())
