"""The distro side of every scenario, for any transport: written as a user would write it.

The sender builds each message with ``distro.message(...)`` (a fresh id each time) and awaits
``client.send`` (or, in the ``send_nowait`` rows, calls ``client.send_nowait`` and awaits
``client.drain()`` once per burst); the receiver is a server with one ``POST`` route whose plain
handler counts the message (the core has decoded and routed it by then). Request/reply: a plain
handler returns the payload; the client awaits ``client.request``. Confirmed sends: tasks awaiting
``client.send(msg, confirm=True)``, a server counting each message by id.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness import (
    HOST4,
    HOST6,
    NATS_URL,
    REDIS_URL,
    Counter,
    Paced,
    Shared,
    payload,
    receiver_report,
    request_loop,
    rr_phases,
    rr_report,
    socket_buffers,
    wait_done,
    wait_stop,
)

import distro_core as distro


def server_options(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options a benchmark server of transport ``name`` is made with (loopback only)."""
    if name == "udp6":
        return {"address": HOST6, "port": 0}
    if name == "redis":
        return {"url": REDIS_URL, "prefix": _prefix(params)}
    if name in ("nats", "jetstream"):
        return {"url": NATS_URL, "prefix": nats_prefix(params)}
    return {"address": HOST4, "port": 0}


def client_options(name: str, address: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options a client of the server at ``address`` (its ``server.address``) needs."""
    if name == "redis":
        return {"url": REDIS_URL, "prefix": _prefix(params)}
    if name in ("nats", "jetstream"):
        return {"url": NATS_URL, "prefix": nats_prefix(params)}
    return {"address": address[0], "port": address[1]}


def _prefix(params: dict[str, Any] | None) -> str:
    # A channel namespace of this run's own: other programs on the same Redis (a test suite's
    # catch-all server, say) must not see the benchmark's messages, nor answer its requests.
    uri = (params or {}).get("uri", "/bench/shared/")
    return f"distro-bench-{uri.split('/')[2]}:"


def nats_prefix(params: dict[str, Any] | None) -> str:
    """The subject prefix of this run's distro servers and clients on NATS (one token)."""
    uri = (params or {}).get("uri", "/bench/shared/")
    return f"distro-bench-{uri.split('/')[2]}"


def _address(server: distro.Server) -> Any:
    return list(server.address)


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        factory = distro.create(params["transport"])
        server = factory.server(**server_options(params["transport"], params))
        counter = Counter(shared)
        hit = counter.hit

        @server.post(params["uri"])
        def on_message(msg: distro.Message) -> None:
            hit()

        async with server:
            results.put(("ready", _address(server)))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
            stats = server.stats
            extra = {"server_received": stats.received, "dropped": dict(stats.dropped)}
            if isinstance(server.address[1], int):
                extra.update(socket_buffers(server.address[1]))
        results.put(("receiver", receiver_report(counter, shared, **extra)))

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        name = params["transport"]
        factory = distro.create(name)
        message = distro.message
        async with factory.client(**client_options(name, address, params)) as client:
            send = client.send
            headers = {"uri": params["uri"], "verb": "POST"}
            count = params["count"]
            paced = Paced(shared, params)
            paced.start()
            n = 0
            if params.get("nowait"):
                # client.send_nowait per message, await client.drain() per burst: the shape
                # of the best raw sender (a burst written at once, flow control per burst).
                send_nowait, drain = client.send_nowait, client.drain
                while n < count:
                    send_nowait(message(headers, payload(n)))
                    n += 1
                    if not n % paced.burst:
                        await drain()
                        if not await paced.pause(n):
                            break
                await drain()
            else:
                while n < count:
                    await send(message(headers, payload(n)))
                    n += 1
                    if not n % paced.burst and not await paced.pause(n):
                        break
            report = paced.finish(n)
        results.put(("sender", report))

    asyncio.run(main())


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        factory = distro.create(params["transport"])
        server = factory.server(**server_options(params["transport"], params))

        @server.post(params["uri"])
        def echo(msg: distro.Message) -> Any:
            return msg.payload

        async with server:
            results.put(("ready", _address(server)))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
        results.put(("receiver", {"dropped": dict(server.stats.dropped)}))

    asyncio.run(main())


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        name = params["transport"]
        factory = distro.create(name)
        message = distro.message
        headers = {"uri": params["uri"], "verb": "POST"}
        timeouts = 0
        async with factory.client(**client_options(name, address, params)) as client:
            request_ = client.request

            async def request(seq: int) -> None:
                nonlocal timeouts
                try:
                    await request_(message(headers, payload(seq)), timeout=1.0)
                except distro.RequestTimeout:
                    timeouts += 1

            return await rr_phases(request, params, lambda: timeouts)

    results.put(("sender", asyncio.run(main())))


# -- confirmed sends (distro only) --------------------------------------------------------------


def confirm_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """The server of the confirmed-send scenario: one ``POST`` route whose plain handler counts
    each message by id (a second run of one id would be a duplicate), until the parent stops it."""

    async def main() -> None:
        factory = distro.create(params["transport"])
        server = factory.server(**server_options(params["transport"], params))
        counter = Counter(shared)
        hit = counter.hit
        seen: set[str] = set()
        twice = 0

        @server.post(params["uri"])
        def on_message(msg: distro.Message) -> None:
            nonlocal twice
            if msg.id in seen:
                twice += 1
            seen.add(msg.id)
            hit()

        async with server:
            results.put(("ready", _address(server)))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
            stats = server.stats
            report = {
                "handled": counter.n,
                "handled_twice": twice,
                "repeats": stats.repeats,
                "dropped": dict(stats.dropped),
            }
        results.put(("receiver", report))

    asyncio.run(main())


def confirm_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """``confirm_outstanding`` tasks each awaiting ``client.send(msg, confirm=True)`` in turn,
    after a warm-up; the rate is sends confirmed per second."""

    async def main() -> dict[str, Any]:
        name = params["transport"]
        factory = distro.create(name)
        message = distro.message
        headers = {"uri": params["uri"], "verb": "POST"}
        failed: dict[str, int] = {}
        async with factory.client(**client_options(name, address, params)) as client:
            send_ = client.send

            async def send(seq: int) -> None:
                try:
                    await send_(message(headers, payload(seq)), confirm=True, timeout=5.0)
                except distro.DistroError as exc:
                    kind = type(exc).__name__
                    failed[kind] = failed.get(kind, 0) + 1

            await request_loop(send, params["warmup"], 10.0, 1)
            done, elapsed, rtts = await request_loop(
                send, params["count"], params["seconds"], params["confirm_outstanding"]
            )
            stats = client.stats
            return rr_report(
                done,
                elapsed,
                rtts,
                failed=failed,
                resent=stats.resent,
                confirmed=stats.confirmed,
            )

    results.put(("sender", asyncio.run(main())))
