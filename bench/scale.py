"""Scale figures: how a distro server's throughput (and memory) moves with four variables.

* **clients**: 1, 10, 100, 1,000 distro tcp clients sending one-way to one tcp server. The
  clients live in ``min(4, N)`` sender processes (N/4 each, one asyncio loop per process),
  each process sending message ``n`` on its client ``n % (its clients)``; the rate is what the
  server received per second, and the server's ``VmRSS`` is read before the clients connect,
  once all have connected (each sends one hello message first), and after the flood.
* **routes**: 1 to 10,000 static ``POST`` routes on one tcp server, one client sending
  one-way; the messages either go round-robin over all the routes (*spread*) or all to the
  last one registered (*one*). The server's RSS before and after registering the routes too.
* **payload**: one tcp client sending one-way messages whose payload carries a string of
  100 B to 1 MB (msg/s and payload MB/s), then request/reply with one request in flight (an
  echo handler returning the payload: the size travels both ways; p50 and p99).
* **replicas**: a group of 1, 2 and 4 server processes (``factory.server(group=...)``) on
  redis-streams (Redis on 127.0.0.1:6379) and on nats (a queue group, NATS on
  127.0.0.1:4222), one sender process; the rate is what the whole group consumed.

Every number comes from fresh processes (:func:`harness.run_pair`), all on loopback, each
point bounded in count and time and the best of two turns (one with ``quick``): read them as
shapes, not as precise values, on a shared 2-core machine. ``run`` returns the numbers,
``render`` prints them, and :func:`scale_plot.plot` draws one PNG per variable (matplotlib, a
benchmark-only dependency).
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import distro_side
import harness
import streams
from harness import (
    _CTX,
    HOST4,
    Counter,
    Paced,
    Shared,
    payload,
    percentile,
    receiver_report,
    request_loop,
    rss_kib,
    wait_done,
)

import distro_core as distro

DEFAULT_PLOTS = Path(__file__).resolve().parent.parent / "docs" / "img"
SENDER_PROCESSES = 4
"""At most this many sender processes hold the clients of the clients figure."""
GROUP_TRANSPORTS = ("redis-streams", "nats")

FULL = {
    "clients": [1, 10, 100, 1_000],
    "routes": [1, 10, 100, 1_000, 10_000],
    "sizes": [100, 1_000, 10_000, 100_000, 1_000_000],
    "members": [1, 2, 4],
    "seconds": 2.0,
    "count": 400_000,
    "rr_seconds": 1.0,
    "rr_count": 5_000,
    "repeat": 2,
}
QUICK = {
    "clients": [1, 100],
    "routes": [1, 10_000],
    "sizes": [100, 10_000, 1_000_000],
    "members": [1, 2],
    "seconds": 0.5,
    "count": 50_000,
    "rr_seconds": 0.3,
    "rr_count": 500,
    "repeat": 1,
}


def _raise_nofile(want: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE towards ``want`` (at most to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        limit = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def _failed(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[-1] if lines else repr(exc))[:200]


# -- measuring --------------------------------------------------------------------------------


@dataclass
class _Case:
    """One point of a figure: a scenario (two processes) and how to read its result."""

    key: tuple[Any, ...]
    label: str
    point: dict[str, Any]
    """The point's coordinates (clients, routes, ...), copied into its result."""
    receiver: Callable[..., None]
    sender: Callable[..., None]
    params: dict[str, Any]
    read: Callable[[dict[str, Any]], dict[str, Any]]
    """The point's fields, from the merged results of the two sides."""
    best: str = "rate"
    """The field that decides which turn is kept: the highest ``rate``, else the lowest."""


def _bounds(sizes: dict[str, Any]) -> dict[str, Any]:
    keys = ("seconds", "count", "rr_seconds", "rr_count")
    return {**{k: sizes[k] for k in keys}, "burst": 64, "timeout": sizes["seconds"] * 3 + 30}


def _measure(
    cases: list[_Case], repeat: int, log: Callable[[str], None]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Run every case ``repeat`` times (all the cases, then again) and keep each one's best
    turn, so that a burst of load from elsewhere does not decide a point alone."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for turn in range(repeat):
        suffix = f" (turn {turn + 1} of {repeat})" if repeat > 1 else ""
        for case in cases:
            log(f"  scale: {case.label}{suffix} ...")
            # A fresh uri (and so stream, subject, prefix) per run: nothing left over counts.
            params = {**case.params, "uri": harness.unique_uri("scale")}
            try:
                got = harness.run_pair(case.receiver, case.sender, params, params["timeout"] + 30)
                new = {**case.point, **case.read(got)}
            except Exception as exc:  # one failed point must not lose the rest of the figure
                new = {**case.point, "error": _failed(exc)}
                log(f"    FAILED {case.label}: {new['error']}")
            old = best.get(case.key)
            if (
                old is None
                or "error" in old
                or ("error" not in new and _beats(new, old, case.best))
            ):
                best[case.key] = new
    return best


def _beats(new: dict[str, Any], old: dict[str, Any], field: str) -> bool:
    if field == "rate":
        return bool(new[field] > old[field])
    return bool(new[field] < old[field])


def _rate(got: dict[str, Any]) -> dict[str, Any]:
    received = got["received"]
    elapsed = got["t_last"] - got["t0"]
    rate = received / elapsed if received and elapsed > 0 else 0.0
    return {"sent": got["sent"], "received": received, "rate": rate}


# -- (a) clients -------------------------------------------------------------------------------


class _Slot:
    """One sender process's state in shared memory."""

    def __init__(self) -> None:
        self.ready = _CTX.RawValue(ctypes.c_int, 0)
        self.done = _CTX.RawValue(ctypes.c_int, 0)
        self.sent = _CTX.RawValue(ctypes.c_long, 0)


def clients_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """A tcp server counting one-way messages; it reads its RSS before the clients connect,
    when all have said hello (then sets ``shared.phase`` to 1), and after the flood, and the
    CPU time it spent per message during the flood."""
    clients = params["clients"]
    _raise_nofile(clients + 256)

    async def main() -> None:
        factory = distro.create("tcp")
        server = factory.server(address=HOST4, port=0, max_connections=max(1024, clients + 64))
        counter = Counter(shared)
        hit = counter.hit
        hellos = 0

        def on_hello(msg: distro.Message) -> None:
            nonlocal hellos
            hellos += 1

        server.route("POST", params["uri"] + "/hello", on_hello)
        server.route("POST", params["uri"], lambda msg: hit())
        async with server:
            await asyncio.sleep(0.2)
            before = rss_kib()
            results.put(("ready", list(server.address)))
            deadline = time.perf_counter() + params["timeout"]
            # The clients are in other processes: poll the count their hellos reached.
            while hellos < clients and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.2)
            connected = rss_kib()
            shared.phase.value = 1
            cpu, wall = time.process_time(), time.perf_counter()
            await wait_done(counter, shared, deadline)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            end = rss_kib()
            stats = server.stats
        results.put(
            (
                "receiver",
                receiver_report(
                    counter,
                    shared,
                    hellos=hellos,
                    rss_before_kib=before,
                    rss_connected_kib=connected,
                    rss_end_kib=end,
                    cpu_us=cpu * 1e6 / max(1, counter.n),
                    busy=cpu / wall,
                    dropped=dict(stats.dropped),
                ),
            )
        )

    asyncio.run(main())


def clients_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """Start the sender processes, let them go together once the server has seen every
    client's hello, and report what they sent in total."""
    clients = params["clients"]
    procs_n = min(SENDER_PROCESSES, clients)
    shares = [clients // procs_n + (i < clients % procs_n) for i in range(procs_n)]
    slots = [_Slot() for _ in range(procs_n)]
    procs = [
        _CTX.Process(
            target=harness._guard,
            args=(clients_process, (params, address, shared, slot, n), results),
        )
        for slot, n in zip(slots, shares, strict=True)
    ]
    for proc in procs:
        proc.start()
    try:
        deadline = time.perf_counter() + params["timeout"]
        while not (all(s.ready.value for s in slots) and shared.phase.value == 1):
            if time.perf_counter() > deadline or any(p.exitcode for p in procs):
                raise RuntimeError("the clients did not all connect")
            time.sleep(0.005)
        shared.t0.value = time.perf_counter()
        shared.phase.value = 2  # go
        while not all(s.done.value for s in slots):
            if time.perf_counter() > deadline or any(p.exitcode for p in procs):
                raise RuntimeError("a sender process did not finish")
            time.sleep(0.005)
        per_process = [s.sent.value for s in slots]
        shared.sent.value = sum(per_process)
        results.put(
            (
                "sender",
                {"sent": sum(per_process), "t0": shared.t0.value, "per_process": per_process},
            )
        )
        # The clients stay connected until the parent stops the scenario (after the server's
        # last RSS reading): closing them is not part of what is measured.
        while not shared.stop.value and time.perf_counter() < deadline:
            time.sleep(0.02)
    finally:
        shared.stop.value = 1
        for proc in procs:
            proc.join(15.0)
            if proc.is_alive():
                proc.terminate()  # only the processes this function started
                proc.join(5.0)


def clients_process(
    params: dict[str, Any], address: Any, shared: Shared, slot: _Slot, count: int
) -> None:
    """``count`` distro tcp clients in one loop: connect, say hello, wait for the go, then send
    message ``n`` on client ``n % count`` until the time or count bound."""
    _raise_nofile(count + 256)

    async def main() -> None:
        factory = distro.create("tcp")
        message = distro.message
        clients: list[distro.Client] = []
        deadline = time.perf_counter() + params["timeout"]
        try:
            for i in range(count):
                client = factory.client(address=address[0], port=address[1])
                await client.open()
                clients.append(client)
                hello = {"uri": params["uri"] + "/hello", "verb": "POST"}
                await client.send(message(hello, payload(i)))
            slot.ready.value = 1
            # Set by another process: shared memory cannot wake an asyncio.Event.
            while shared.phase.value != 2 and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            sends = [c.send for c in clients]
            headers = {"uri": params["uri"], "verb": "POST"}
            stop_at = shared.t0.value + params["seconds"]
            limit = params["count"] // min(SENDER_PROCESSES, params["clients"])
            burst = params.get("burst", 64)
            n = 0
            while n < limit:
                await sends[n % count](message(headers, payload(n)))
                n += 1
                if not n % burst:
                    await asyncio.sleep(0)
                    if time.perf_counter() > stop_at:
                        break
            slot.sent.value = n
            slot.done.value = 1
            while not shared.stop.value and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)

    asyncio.run(main())


def _clients(sizes: dict[str, Any]) -> list[_Case]:
    cases = []
    for n in sizes["clients"]:
        procs = min(SENDER_PROCESSES, n)
        cases.append(
            _Case(
                ("clients", n),
                f"{n:,} tcp client(s) in {procs} sender process(es)",
                {"clients": n, "processes": procs},
                clients_server,
                clients_sender,
                {**_bounds(sizes), "clients": n, "timeout": sizes["seconds"] * 3 + 60},
                _read_clients,
            )
        )
    return cases


def _read_clients(got: dict[str, Any]) -> dict[str, Any]:
    return {
        **_rate(got),
        "per_process": got["per_process"],
        "rss_before_kib": got["rss_before_kib"],
        "rss_connected_kib": got["rss_connected_kib"],
        "rss_end_kib": got["rss_end_kib"],
        "server_cpu_us": got["cpu_us"],
        "server_busy": got["busy"],
        "bytes_per_client": (got["rss_connected_kib"] - got["rss_before_kib"])
        * 1024
        / max(1, got["hellos"]),
        "dropped": got["dropped"],
    }


# -- (b) routes --------------------------------------------------------------------------------


def _route_uris(params: dict[str, Any]) -> list[str]:
    return [f"{params['uri']}/r{i}" for i in range(params["routes"])]


def routes_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """A tcp server with ``routes`` static POST routes, one counting handler for all."""

    async def main() -> None:
        server = distro.create("tcp").server(address=HOST4, port=0)
        counter = Counter(shared)
        hit = counter.hit

        def on_message(msg: distro.Message) -> None:
            hit()

        before = rss_kib()
        for uri in _route_uris(params):
            server.route("POST", uri, on_message)
        after = rss_kib()
        async with server:
            results.put(("ready", list(server.address)))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
            stats = server.stats
        results.put(
            (
                "receiver",
                receiver_report(
                    counter,
                    shared,
                    rss_routes_kib=after - before,
                    no_route=stats.dropped.get("no_route", 0),
                ),
            )
        )

    asyncio.run(main())


def routes_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """One tcp client; message ``n`` goes to route ``n % routes`` (spread) or to the last."""

    async def main() -> None:
        message = distro.message
        uris = _route_uris(params)
        if params["mode"] == "one":
            uris = uris[-1:]
        headers = [{"uri": uri, "verb": "POST"} for uri in uris]
        spread = len(headers)
        async with distro.create("tcp").client(address=address[0], port=address[1]) as client:
            send = client.send
            count = params["count"]
            paced = Paced(shared, params)
            paced.start()
            n = 0
            while n < count:
                await send(message(headers[n % spread], payload(n)))
                n += 1
                if not n % paced.burst and not await paced.pause(n):
                    break
            report = paced.finish(n)
        results.put(("sender", report))

    asyncio.run(main())


def _routes(sizes: dict[str, Any]) -> list[_Case]:
    cases = []
    for n in sizes["routes"]:
        # With one route, "spread" and "one" are the same scenario: measured once.
        for mode in ("spread", "one") if n > 1 else ("spread",):
            cases.append(
                _Case(
                    ("routes", n, mode),
                    f"{n:,} route(s), {mode}",
                    {"routes": n, "mode": mode},
                    routes_server,
                    routes_sender,
                    {**_bounds(sizes), "routes": n, "mode": mode},
                    lambda got: {**_rate(got), "rss_routes_kib": got["rss_routes_kib"]},
                )
            )
    return cases


# -- (c) payload size --------------------------------------------------------------------------


def _blob(size: int) -> str:
    return "x" * size


def payload_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """One tcp client sending messages whose payload carries a ``size``-byte string."""

    async def main() -> None:
        message = distro.message
        blob = _blob(params["size"])
        headers = {"uri": params["uri"], "verb": "POST"}
        async with distro.create("tcp").client(address=address[0], port=address[1]) as client:
            send = client.send
            frame = len(message(headers, {"seq": 0, "data": blob}).to_bytes())
            count = params["count"]
            paced = Paced(shared, params)
            paced.start()
            n = 0
            while n < count:
                await send(message(headers, {"seq": n, "data": blob}))
                n += 1
                if not n % paced.burst and not await paced.pause(n):
                    break
            report = paced.finish(n)
        results.put(("sender", {**report, "frame_bytes": frame}))

    asyncio.run(main())


def payload_client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    """Request/reply with one request in flight, the payload echoed back."""

    async def main() -> dict[str, Any]:
        message = distro.message
        blob = _blob(params["size"])
        headers = {"uri": params["uri"], "verb": "POST"}
        async with distro.create("tcp").client(address=address[0], port=address[1]) as client:
            request_ = client.request

            async def request(seq: int) -> None:
                await request_(message(headers, {"seq": seq, "data": blob}), timeout=10.0)

            await request_loop(request, params["warmup"], 10.0, 1)
            done, elapsed, rtts = await request_loop(
                request, params["rr_count"], params["rr_seconds"], 1
            )
        rtts.sort()
        return {
            "done": done,
            "p50": percentile(rtts, 0.5),
            "p99": percentile(rtts, 0.99),
            "rate": done / elapsed if elapsed > 0 else 0.0,
        }

    results.put(("sender", asyncio.run(main())))


def _payload(sizes: dict[str, Any]) -> list[_Case]:
    cases = []
    for size in sizes["sizes"]:
        # A burst is ~64 KB of payload (at least one message) before the sender yields.
        params = {**_bounds(sizes), "transport": "tcp", "size": size}
        params["burst"] = max(1, min(64, 65_536 // size))
        cases.append(
            _Case(
                ("oneway", size),
                f"payload {size_label(size)}, one-way",
                {"size": size},
                distro_side.receiver,
                payload_sender,
                params,
                lambda got: {**_rate(got), "frame_bytes": got["frame_bytes"]},
            )
        )
        cases.append(
            _Case(
                ("rr", size),
                f"payload {size_label(size)}, request/reply",
                {"size": size},
                distro_side.echo_server,
                payload_client,
                {**params, "server": True, "warmup": 10},
                lambda got: {"rr_p50": got["p50"], "rr_p99": got["p99"], "rr_done": got["done"]},
                best="rr_p50",
            )
        )
    return cases


def _join_payload(best: dict[tuple[Any, ...], dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per size: its one-way fields and its request/reply fields."""
    joined: dict[int, dict[str, Any]] = {}
    for (kind, size), p in best.items():
        into = joined.setdefault(size, {"size": size})
        if "error" in p:
            into["rr_error" if kind == "rr" else "error"] = p["error"]
        else:
            into.update(p)
        if kind == "oneway" and "rate" in p:
            into["mb_per_s"] = p["rate"] * size / 1e6
    return list(joined.values())


def size_label(size: int) -> str:
    """``100 B``, ``10 KB``, ``1 MB``: a payload size in decimal units."""
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


# -- (d) replicas in a group -------------------------------------------------------------------


def streams_group(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """The redis-streams group of ``members`` distro servers (bench/streams.py's receiver)."""
    # This process is fresh (spawn): the group size is set for it alone, and run_group reads it.
    streams.MEMBERS = params["members"]
    streams.distro_receiver(params, shared, results)


def nats_group(params: dict[str, Any], shared: Shared, results: Any) -> None:
    """The nats queue group of ``members`` distro servers (bench/nats_side.py's receiver)."""
    import nats_side

    streams.MEMBERS = params["members"]  # as in streams_group
    nats_side.receiver({**params, "group": True}, shared, results)


_GROUPS: dict[str, tuple[Callable[..., None], Callable[..., None]]] = {
    "redis-streams": (streams_group, streams.distro_sender),
    "nats": (nats_group, distro_side.sender),
}


def _replicas(sizes: dict[str, Any], log: Callable[[str], None]) -> list[_Case]:
    cases = []
    available = distro.transports()
    for name in GROUP_TRANSPORTS:
        if name not in available:
            log(f"  scale: transport {name!r} not available: its group points are skipped")
            continue
        receiver, sender = _GROUPS[name]
        for members in sizes["members"]:
            cases.append(
                _Case(
                    ("replicas", name, members),
                    f"{name}, a group of {members} server process(es)",
                    {"transport": name, "members": members},
                    receiver,
                    sender,
                    {**_bounds(sizes), "transport": name, "members": members},
                    lambda got: {**_rate(got), "per_member": got["per_member"]},
                )
            )
    return cases


# -- the section -------------------------------------------------------------------------------


def run(
    quick: bool, log: Callable[[str], None], plots: Path | None = DEFAULT_PLOTS
) -> dict[str, Any]:
    """Measure the four figures; write their PNGs into ``plots`` (None: no plots).

    :returns: the points of each figure (a point that failed carries ``error``), the bounds,
        how long it took, and which PNGs were written (or why none were).
    """
    if "tcp" not in distro.transports():
        log("scale: distro transport 'tcp' not available (not installed yet)")
        return {"missing": "transport 'tcp' not available"}
    sizes = dict(QUICK if quick else FULL)
    started = time.monotonic()
    out: dict[str, Any] = {
        "bounds": sizes,
        "nproc": os.cpu_count(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }
    repeat = sizes["repeat"]
    out["clients"] = list(_measure(_clients(sizes), repeat, log).values())
    out["routes"] = list(_measure(_routes(sizes), repeat, log).values())
    out["payload"] = _join_payload(_measure(_payload(sizes), repeat, log))
    out["replicas"] = list(_measure(_replicas(sizes, log), repeat, log).values())
    out["elapsed"] = time.monotonic() - started
    if plots is not None:
        try:
            from scale_plot import plot

            out["plots"] = plot(out, plots)
        except ImportError as exc:
            out["plots_skipped"] = f"matplotlib is not installed ({exc})"
            log(
                f"scale: plots skipped: {out['plots_skipped']}; "
                "pip install -r bench/requirements.txt"
            )
    return out


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    return [
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *rows]
    ]


def render(result: dict[str, Any]) -> str:
    """The four figures as text tables."""
    if "missing" in result:
        return f"== scale ==\n   distro: not available: {result['missing']}"
    out = [
        f"== scale: tcp clients (one server process; min({SENDER_PROCESSES}, N) sender "
        "processes, message n on client n % clients) =="
    ]
    rows, notes = [], []
    for p in result["clients"]:
        if "error" in p:
            notes.append(f"{p['clients']:,} clients: failed: {p['error']}")
            continue
        rows.append(
            [
                f"{p['clients']:,}",
                str(p["processes"]),
                _num(p["rate"]),
                _num(p["server_cpu_us"], 2),
                f"{p['server_busy']:.0%}",
                _num(p["rss_before_kib"]),
                _num(p["rss_connected_kib"]),
                _num(p["rss_end_kib"]),
                # Below 100 clients the growth is within the RSS's page-sized noise.
                _num(p["bytes_per_client"] / 1024, 1) if p["clients"] >= 100 else "-",
            ]
        )
        if p["received"] < p["sent"]:
            notes.append(f"{p['clients']:,} clients: {p['received']:,}/{p['sent']:,} received")
    out += _table(
        [
            "clients",
            "procs",
            "msg/s",
            "server CPU µs/msg",
            "server busy",
            "RSS idle KiB",
            "connected KiB",
            "after flood KiB",
            "KiB/client",
        ],
        rows,
    )
    out += [f"   {n}" for n in notes]
    out.append(
        "   RSS: the server's VmRSS before the clients connect, once all said hello, after "
        "the flood; KiB/client = (connected - idle) / clients, from 100 clients up; server "
        "CPU: the server process's CPU time during the flood per message received; busy: that "
        "CPU time over the flood's wall time (below 100%, the senders set the rate)"
    )

    out.append("\n== scale: routes on one tcp server (static POST routes, one client) ==")
    by_routes: dict[int, dict[str, Any]] = {}
    notes = []
    for p in result["routes"]:
        by_routes.setdefault(p["routes"], {})[p["mode"]] = p
        if "error" in p:
            notes.append(f"{p['routes']:,} routes, {p['mode']}: failed: {p['error']}")
    rows = []
    for n, modes in by_routes.items():
        spread = modes.get("spread", {})
        one = modes.get("one", spread if n == 1 else {})
        rss = spread.get("rss_routes_kib", one.get("rss_routes_kib"))
        rows.append([f"{n:,}", _num(spread.get("rate")), _num(one.get("rate")), _num(rss)])
    out += _table(["routes", "spread msg/s", "one route msg/s", "RSS for routes KiB"], rows)
    out += [f"   {n}" for n in notes]
    out.append(
        "   spread: message n to route n % routes; one: every message to the last route "
        "registered; RSS: the server's VmRSS growth while registering them"
    )

    out.append("\n== scale: payload size over tcp (one client; payload {seq, data: 'x' * size}) ==")
    rows, notes = [], []
    for p in result["payload"]:
        if "error" in p:
            notes.append(f"{size_label(p['size'])}: one-way failed: {p['error']}")
        if "rr_error" in p:
            notes.append(f"{size_label(p['size'])}: request/reply failed: {p['rr_error']}")
        rows.append(
            [
                size_label(p["size"]),
                _num(p.get("frame_bytes")),
                _num(p.get("rate")),
                _num(p.get("mb_per_s"), 1),
                _num(p.get("rr_p50"), 1),
                _num(p.get("rr_p99"), 1),
            ]
        )
    out += _table(
        ["payload", "frame bytes", "msg/s", "payload MB/s", "rr p50 µs", "rr p99 µs"], rows
    )
    out += [f"   {n}" for n in notes]
    out.append(
        "   one-way msg/s and payload MB/s (10^6 bytes); request/reply: one in flight, the "
        "handler returns the payload (the size goes both ways)"
    )

    out.append("\n== scale: replicas (server processes in one group, one sender process) ==")
    rows, notes = [], []
    for p in result["replicas"]:
        if "error" in p:
            notes.append(
                f"{p['transport']}, {p.get('members', '-')} member(s): failed: {p['error']}"
            )
            continue
        rows.append(
            [
                p["transport"],
                str(p["members"]),
                _num(p["rate"]),
                " / ".join(f"{n:,}" for n in p["per_member"]),
            ]
        )
    out += _table(["transport", "members", "msg/s", "consumed per member"], rows)
    out += [f"   {n}" for n in notes]
    out.append(
        f"   this machine has {result.get('nproc')} cores shared by the sender, the members "
        "and the broker, so this is not how a group scales on a bigger machine: a second member "
        "helps only while one member is the busiest process, and each further process takes CPU "
        "from the others; per member shows how the broker spreads the messages"
    )
    out.append(
        f"   ({result['elapsed']:.0f} s; load average at the start {result['loadavg']}; each "
        f"point the best of {result['bounds']['repeat']} turn(s) of "
        f"{result['bounds']['seconds']:g} s or {result['bounds']['count']:,} messages)"
    )
    if "plots" in result:
        out.append("   plots: " + ", ".join(result["plots"]))
    elif "plots_skipped" in result:
        out.append(f"   plots skipped: {result['plots_skipped']}")
    return "\n".join(out)
