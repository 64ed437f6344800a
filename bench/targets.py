"""The targets distro is held to, checked against one run's numbers (met / missed by how much)."""

from __future__ import annotations

import math
from typing import Any


def _get(tables: list[Any], name: str, impl: str | None, key: str) -> float | None:
    for table in tables:
        if table.name == name and impl is not None:
            value = table.values.get((impl, key))
            if value is not None and not math.isnan(value) and value > 0:
                return float(value)
    return None


def check(
    tables: list[Any], memory: dict[str, Any], micro: dict[str, float] | None
) -> list[tuple[str, str, str]]:
    """Each target as ``(target, measured, verdict)``, for every event loop the tables were
    measured on (a loop's verdicts say which); targets whose numbers were not taken in this run
    are left out."""
    loops = list(dict.fromkeys(getattr(t, "loop", "asyncio") for t in tables)) or ["asyncio"]
    out: list[tuple[str, str, str]] = []
    for index, loop in enumerate(loops):
        mine = [t for t in tables if getattr(t, "loop", "asyncio") == loop]
        verdicts = _check_loop(mine, memory if index == 0 else {}, micro if index == 0 else None)
        if len(loops) > 1:
            verdicts = [(f"[{loop}] {what}", got, verdict) for what, got, verdict in verdicts]
        out += verdicts
    return out


def _best_label(table: Any) -> str | None:
    best = getattr(table, "best", None)
    return best.label if best is not None else table.impls[1].label


def _check_loop(
    tables: list[Any], memory: dict[str, Any], micro: dict[str, float] | None
) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []

    def ratio_at_least(what: str, num: float | None, den: float | None, goal: float) -> None:
        if num is None or den is None:
            return
        ratio = num / den
        verdict = "met" if ratio >= goal else f"MISSED by {_share((goal - ratio) / goal)}"
        out.append((what, f"{ratio:.2f}x", verdict))

    def ratio_at_most(what: str, num: float | None, den: float | None, goal: float) -> None:
        if num is None or den is None:
            return
        ratio = num / den
        verdict = "met" if ratio <= goal else f"MISSED by {_share((ratio - goal) / goal)}"
        out.append((what, f"{ratio:.2f}x", verdict))

    for table in tables:
        if table.name.endswith("-bounce"):
            continue  # the bounce tables (bench/bounce.py) are shown for comparison: no target
        raw = _best_label(table)
        if table.name in ("nats", "jetstream"):
            _nats_targets(table.name, tables, ratio_at_least, ratio_at_most)
            continue
        for mode, _ in table.oneway_modes:
            key = f"oneway:{mode}"
            label = f"{table.name} one-way{' ' + mode if mode else ''}: distro/best raw"
            d, r = _get(tables, table.name, "distro", key), _get(tables, table.name, raw, key)
            if table.name == "tcp":
                # Issue 15: tcp one-way at least the best raw sender (writelines per burst).
                ratio_at_least(label + " >= 1.0x", d, r, 1.0)
                if mode:  # the send_nowait row; the await send row must improve too
                    continue
            else:
                ratio_at_least(label + " >= 0.9x", d, r, 0.9)
        if table.name in ("udp4", "udp6", "tcp"):
            ratio_at_least(
                f"{table.name} req/reply 32 in flight: distro/raw >= 0.9x",
                _get(tables, table.name, "distro", "rr:rate"),
                _get(tables, table.name, raw, "rr:rate"),
                0.9,
            )
            ratio_at_most(
                f"{table.name} req/reply p50: distro/raw <= 1.1x",
                _get(tables, table.name, "distro", "rr:p50"),
                _get(tables, table.name, raw, "rr:p50"),
                1.1,
            )
        if table.name == "redis":
            ratio_at_least(
                "redis pub/sub throughput: distro/FastStream >= 8x",
                _get(tables, "redis", "distro", "oneway:"),
                _get(tables, "redis", "FastStream", "oneway:"),
                8.0,
            )
            ratio_at_least(
                "redis request round trip: FastStream p50 / distro p50 >= 5x",
                _get(tables, "redis", "FastStream", "rr:p50"),
                _get(tables, "redis", "distro", "rr:p50"),
                5.0,
            )
        if table.name == "redis-streams":
            group = "oneway:group of 2"
            ratio_at_least(
                "redis-streams group of 2: distro/raw redis-py >= 1.0x",
                _get(tables, table.name, "distro", group),
                _get(tables, table.name, raw, group),
                1.0,
            )
            ratio_at_least(
                "redis-streams group of 2: distro/FastStream >= 10x",
                _get(tables, table.name, "distro", group),
                _get(tables, table.name, "FastStream", group),
                10.0,
            )
    if micro:
        for kind in ("static", "param"):
            one, many = micro.get(f"route_{kind}_1"), micro.get(f"route_{kind}_10000")
            ratio_at_most(f"routing ({kind}) 10,000 routes vs 1: <= 1.2x", many, one, 1.2)
    growth = memory.get("growth_per_message")
    if growth is not None:
        verdict = "met" if growth < 1.0 else f"MISSED: {growth:.1f} bytes/message"
        if memory["messages"] < 1_000_000:
            # A few hundred KiB of allocator growth is noise over 1M messages, not over 50k.
            verdict = "not judged: too few messages (--quick)"
        out.append(
            (
                f"no per-message memory growth (tcp, {memory['messages']:,} messages): "
                "< 1 byte/message",
                f"{growth:.2f} bytes/message",
                verdict,
            )
        )
    return out


def _nats_targets(name: str, tables: list[Any], at_least: Any, at_most: Any) -> None:
    """Issue 11's targets: distro over NATS >= 1.0x raw nats-py one-way (the queue group too)
    and >= 15x FastStream's NatsBroker; request p50 <= 1.0x nats-py's ``request()``;
    JetStream consume >= 1.0x a raw durable pull consumer."""
    if name == "nats":
        raw = "raw nats-py"
        for key, what in (("oneway:", "one-way"), ("oneway:queue group of 2", "queue group of 2")):
            d = _get(tables, name, "distro", key)
            at_least(
                f"nats {what}: distro/raw nats-py >= 1.0x", d, _get(tables, name, raw, key), 1.0
            )
            at_least(
                f"nats {what}: distro/FastStream >= 15x",
                d,
                _get(tables, name, "FastStream", key),
                15.0,
            )
        at_most(
            "nats req/reply p50: distro/raw nats-py request() <= 1.0x",
            _get(tables, name, "distro", "rr:p50"),
            _get(tables, name, raw, "rr:p50"),
            1.0,
        )
    if name == "jetstream":
        key = "oneway:consume (durable pull)"
        at_least(
            "jetstream consume: distro/raw pull consumer >= 1.0x",
            _get(tables, name, "distro", key),
            _get(tables, name, "raw nats-py", key),
            1.0,
        )


def _share(fraction: float) -> str:
    return f"{fraction:.1%}" if fraction >= 0.001 else "<0.1%"


def render(verdicts: list[tuple[str, str, str]]) -> str:
    """The verdicts as a text table."""
    width = max(len(v[0]) for v in verdicts)
    lines = ["== targets =="]
    lines += [f"{t.ljust(width)}  {m:>22}  {v}" for t, m, v in verdicts]
    return "\n".join(lines)
