"""Memory checks over tcp: a server's RSS while it takes a million messages, and what an idle
client connection costs it. RSS is ``VmRSS`` from ``/proc/self/status`` of the server process."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from typing import Any

import distro_side
import harness
from harness import Counter, Shared, payload, rss_kib, wait_done

import distro_core as distro

TRANSPORT = "tcp"


def flood_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """A tcp server that counts messages and samples its RSS every ``sample_every`` of them."""

    async def main() -> None:
        server = distro.create(TRANSPORT).server(**distro_side.server_options(TRANSPORT))
        counter = Counter(shared)
        hit = counter.hit
        samples: list[tuple[int, int]] = []
        every = params["sample_every"]

        @server.post(params["uri"])
        def on_message(msg: distro.Message) -> None:
            hit()
            if not counter.n % every:
                samples.append((counter.n, rss_kib()))

        async with server:
            samples.append((0, rss_kib()))
            results.put(("ready", list(server.address)))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
            await asyncio.sleep(0.2)  # let the last buffers be released before the final sample
            samples.append((counter.n, rss_kib()))
            stats = server.stats
        results.put(
            (
                "receiver",
                harness.receiver_report(
                    counter, shared, samples=samples, dropped=dict(stats.dropped)
                ),
            )
        )

    asyncio.run(main())


def idle_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """A tcp server that measures its RSS before and after ``count`` clients connected."""

    async def main() -> None:
        server = distro.create(TRANSPORT).server(**distro_side.server_options(TRANSPORT))
        counter = Counter(shared)
        hit = counter.hit

        @server.post(params["uri"])
        def on_message(msg: distro.Message) -> None:
            hit()

        async with server:
            await asyncio.sleep(0.2)
            before = rss_kib()
            results.put(("ready", list(server.address)))
            # Each client sends one message once connected: all arrived = all connected.
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
            await asyncio.sleep(0.5)
            after = rss_kib()
            shared.phase.value = 1  # the clients may close now
            report = {"received": counter.n, "before_kib": before, "after_kib": after}
            await asyncio.sleep(0.5)
        results.put(("receiver", report))

    asyncio.run(main())


def idle_clients(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """Open ``count`` distro tcp clients, send one message on each, and hold them open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = params["count"] + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    async def main() -> dict[str, Any]:
        factory = distro.create(TRANSPORT)
        options = distro_side.client_options(TRANSPORT, address)
        before = rss_kib()
        clients = []
        try:
            for n in range(params["count"]):
                client = factory.client(**options)
                await client.open()
                clients.append(client)
                await client.send(
                    distro.message({"uri": params["uri"], "verb": "POST"}, payload(n))
                )
            after = rss_kib()
            shared.sent.value = len(clients)
            deadline = time.perf_counter() + params["timeout"]
            # Set by the server process: shared memory cannot wake an asyncio.Event.
            while not shared.phase.value and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        finally:
            for client in clients:
                await client.aclose()
        return {"clients": len(clients), "client_before_kib": before, "client_after_kib": after}

    results.put(("sender", asyncio.run(main())))


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Both checks; returns their numbers (empty when tcp is not available)."""
    if TRANSPORT not in distro.transports():
        log(f"memory: distro transport {TRANSPORT!r} not available (not installed yet)")
        return {"missing": f"transport {TRANSPORT!r} not available"}
    count = 50_000 if quick else 1_000_000
    conns = 100 if quick else 1_000
    out: dict[str, Any] = {"messages": count, "connections": conns}
    log(f"  memory: {count:,} messages into one tcp server ...")
    params = {
        "transport": TRANSPORT,
        "uri": harness.unique_uri("mem"),
        "count": count,
        "seconds": 120.0,
        "burst": 64,
        "timeout": 150.0,
        "sample_every": count // 10,
    }
    try:
        got = harness.run_pair(flood_server, distro_side.sender, params, 200.0)
    except RuntimeError as exc:
        out["flood_error"] = str(exc).splitlines()[-1]
    else:
        samples = got["samples"]
        warm = samples[1] if len(samples) > 2 else samples[0]
        end = samples[-1]
        out.update(
            received=got["received"],
            sent=got["sent"],
            samples=samples,
            start_kib=samples[0][1],
            warm_kib=warm[1],
            end_kib=end[1],
            growth_per_message=(end[1] - warm[1]) * 1024 / max(1, end[0] - warm[0]),
            rate=got["received"] / max(1e-9, got["t_last"] - got["t0"]),
        )
    log(f"  memory: {conns:,} idle tcp client connections ...")
    params = {"uri": harness.unique_uri("idle"), "count": conns, "timeout": 60.0}
    try:
        got = harness.run_pair(idle_server, idle_clients, params, 120.0)
    except RuntimeError as exc:
        out["idle_error"] = str(exc).splitlines()[-1]
    else:
        out.update(
            idle_connected=got["clients"],
            idle_before_kib=got["before_kib"],
            idle_after_kib=got["after_kib"],
            server_bytes_per_connection=(got["after_kib"] - got["before_kib"]) * 1024 / conns,
            client_bytes_per_client=(got["client_after_kib"] - got["client_before_kib"])
            * 1024
            / conns,
        )
    return out


def render(result: dict[str, Any]) -> str:
    """The memory checks as text."""
    lines = ["== memory (tcp; server RSS from /proc/self/status VmRSS) =="]
    if "missing" in result:
        return lines[0] + f"\n   distro: not available: {result['missing']}"
    if "flood_error" in result:
        lines.append(f"   flood: failed: {result['flood_error']}")
    elif "end_kib" in result:
        lines.append(
            f"   {result['received']:,} of {result['sent']:,} messages received "
            f"at {result['rate']:,.0f} msg/s"
        )
        lines.append(
            f"   server RSS: start {result['start_kib']:,} KiB, after the first "
            f"{result['samples'][1][0]:,} messages {result['warm_kib']:,} KiB, end "
            f"{result['end_kib']:,} KiB -> {result['growth_per_message']:.2f} bytes/message "
            "after warm-up"
        )
        lines.append(
            "   samples (messages: KiB): "
            + ", ".join(f"{n:,}: {kib:,}" for n, kib in result["samples"])
        )
    if "idle_error" in result:
        lines.append(f"   idle connections: failed: {result['idle_error']}")
    elif "server_bytes_per_connection" in result:
        lines.append(
            f"   {result['idle_connected']:,} idle tcp clients: server RSS "
            f"{result['idle_before_kib']:,} -> {result['idle_after_kib']:,} KiB = "
            f"{result['server_bytes_per_connection'] / 1024:.1f} KiB per connection; client "
            f"process {result['client_bytes_per_client'] / 1024:.1f} KiB per distro Client"
        )
    return "\n".join(lines)
