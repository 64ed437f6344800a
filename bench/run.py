"""distro's benchmark suite: distro against raw sockets and its peers, in one run.

    python3 dev.py bench                      # everything (about 5-8 minutes)
    python3 dev.py bench --quick              # small counts: a smoke test of the harness
    python3 dev.py bench --only udp4,tcp      # some tables (udp4 udp6 tcp zmq redis redis-streams
                                              # redis-bounce nats jetstream nats-bounce memory
                                              # scale micro)
    .venv/bin/python bench/run.py --only scale --plots DIR   # the scale figures, PNGs into DIR
    .venv/bin/python bench/run.py --micro     # only the pytest-benchmark micro-benchmarks

Senders and receivers run in separate processes; see docs/benchmarks.md for what each number
means. The benchmark-only dependencies (bench/requirements.txt) are pip-installed into the
running interpreter's environment when missing, never as runtime dependencies of distro.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
REQUIREMENTS = BENCH / "requirements.txt"
BENCH_MODULES = {
    "faststream": "faststream",
    "kombu": "kombu",
    "zmq": "pyzmq",
    "redis": "redis",
    "nats": "nats-py",
    "matplotlib": "matplotlib",
    "uvloop": "uvloop",
}
SECTIONS = [
    "udp4",
    "udp6",
    "tcp",
    "zmq",
    "redis",
    "redis-streams",
    "redis-bounce",
    "nats",
    "jetstream",
    "nats-bounce",
    "memory",
    "scale",
    "costs",
    "micro",
]
DEFAULT = [
    "udp4",
    "tcp",
    "zmq",
    "redis",
    "redis-streams",
    "redis-bounce",
    "nats",
    "jetstream",
    "nats-bounce",
    "memory",
    "scale",
    "costs",
    "micro",
]

FULL = {
    "count": 200_000,
    "seconds": 5.0,
    "count_rr": 20_000,
    "warmup": 500,
    "outstanding": 32,
    "repeat": 2,
    "pin": False,
}
QUICK = {
    "count": 5_000,
    "seconds": 1.0,
    "count_rr": 500,
    "warmup": 50,
    "outstanding": 32,
    "repeat": 1,
    "pin": False,
}


def ensure_bench_deps() -> None:
    """pip-install bench/requirements.txt into this interpreter when a bench module is missing."""
    missing = [
        dist for module, dist in BENCH_MODULES.items() if not importlib.util.find_spec(module)
    ]
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)]
    print(f"bench: {', '.join(missing)} missing; installing the benchmark-only requirements:")
    print("+ " + " ".join(cmd), flush=True)
    code = subprocess.run(cmd, check=False).returncode
    if code:
        print(
            f"bench: pip exited with {code}; the scenarios needing {', '.join(missing)} "
            "are reported as not installed"
        )
    importlib.invalidate_caches()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dists = [
        "distro-core",
        "distro-redis",
        "distro-zmq",
        "distro-nats",
        "orjson",
        "pyzmq",
        "redis",
        "nats-py",
        "faststream",
        "kombu",
        "uvloop",
        "pytest-benchmark",
    ]
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": {d: _version(d) for d in dists},
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "µs":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def render(table: Any) -> str:
    """One table as text: the value of each implementation and distro's ratio to each."""
    import scenarios

    impls = table.impls
    others = [i for i in impls[1:]]
    head = ["", *(i.label for i in impls), *(f"distro/{i.short}" for i in others)]
    lines: list[list[str]] = [head]
    notes: list[str] = []
    for row in table.rows():
        cells = [row.label]
        for impl in impls:
            if impl.missing:
                cells.append("n/a")
                continue
            value = table.values.get((impl.label, row.key))
            cells.append(_fmt(value, row.unit))
        distro_value = table.values.get((impls[0].label, row.key))
        for impl in others:
            other = table.values.get((impl.label, row.key))
            if distro_value and other and not (math.isnan(distro_value) or math.isnan(other)):
                cells.append(f"{distro_value / other:.2f}x")
            else:
                cells.append("-")
        lines.append(cells)
    for impl in impls:
        if impl.missing:
            notes.append(f"{impl.label}: not available: {impl.missing}")
            continue
        for row in table.rows():
            note = table.notes.get((impl.label, row.key)) or table.notes.get(
                (impl.label, row.key.split(":")[0])
            )
            if note:
                notes.append(f"{impl.label}, {row.label}: {note}")
        if (impl.label, "rcvbuf") in table.values and table.name.startswith("udp"):
            notes.append(
                f"{impl.label}: receive socket SO_RCVBUF "
                f"{int(table.values[(impl.label, 'rcvbuf')]):,} bytes"
            )
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    out = [f"== {table.title} =="]
    for line in lines:
        out.append(
            "  ".join(
                cell.rjust(w) if c else cell.ljust(w)
                for c, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    out.append("   msg/s: higher is better; µs: lower is better (a ratio < 1 is distro faster)")
    del scenarios
    out += [f"   {n}" for n in notes]
    out += [f"   note: {r}" for r in table.remarks]
    return "\n".join(out)


def run_micro(quick: bool) -> tuple[int, dict[str, float]]:
    """The pytest-benchmark micro-benchmarks, in a child process; returns its exit code and
    each benchmark's median in seconds, by name (``route_static_10000``, ...)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "micro.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(BENCH / "test_micro.py"),
            "--benchmark-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-columns=min,median,mean,stddev,rounds",
            "--benchmark-sort=name",
            f"--benchmark-json={out}",
            "--benchmark-max-time=0.05" if quick else "--benchmark-max-time=1.0",
        ]
        print("+ " + " ".join(cmd), flush=True)
        code = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        medians: dict[str, float] = {}
        if out.exists():
            for bench in json.loads(out.read_text())["benchmarks"]:
                name = bench["name"].removeprefix("test_")
                for ch in "[]":
                    name = name.replace(ch, "_" if ch == "[" else "")
                medians[name.replace("-", "_")] = bench["stats"]["median"]
    return code, medians


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (CI smoke test)")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(SECTIONS)}")
    parser.add_argument("--micro", action="store_true", help="only the micro-benchmarks")
    parser.add_argument("--count", type=int, help="messages per one-way scenario")
    parser.add_argument("--seconds", type=float, help="time bound per scenario")
    parser.add_argument(
        "--repeat", type=int, help="turns per scenario, best kept (default 2; --quick: 1)"
    )
    parser.add_argument(
        "--loops",
        default="asyncio,uvloop",
        help="event loops to measure every table on, comma-separated: asyncio, uvloop "
        "(default both: one table per loop, distro and its baselines on the same loop)",
    )
    parser.add_argument("--no-install", action="store_true", help="never pip-install bench deps")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin receivers to the last CPU and senders to the first (libzmq's I/O thread is "
        "pinned with its process too); by default the scheduler places them",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="where the scale section writes its PNGs (default docs/img; with --quick, a "
        "temporary directory, so that a smoke run leaves the committed figures alone)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile distro's processes; print where the time goes, save the profiles in DIR",
    )
    parser.add_argument(
        "--profiler",
        choices=["cprofile", "py-spy"],
        default="py-spy",
        help="with --profile: sampling (py-spy, the default) or deterministic (cProfile)",
    )
    args = parser.parse_args(argv)
    sections = [s for s in args.only.split(",") if s] if args.only else list(DEFAULT)
    if args.micro:
        sections = ["micro"]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if not args.no_install:
        ensure_bench_deps()
    sys.path.insert(0, str(BENCH))
    import costs
    import memcheck
    import scale
    import scenarios
    import targets

    import distro_core as distro

    sizes: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.count:
        sizes["count"] = args.count
    if args.seconds:
        sizes["seconds"] = args.seconds
    if args.repeat:
        sizes["repeat"] = max(1, args.repeat)
    if args.pin:
        sizes["pin"] = True
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        sizes["profile"] = str(args.profile.resolve())
        sizes["profiler"] = args.profiler
    info = machine()
    print(f"distro benchmarks, {info['date']}")
    print(
        f"machine: {info['nproc']} cores ({info['cpu']}), Python {info['python']}, "
        f"load average {info['loadavg']}; senders and receivers share these cores"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"transports available: {', '.join(distro.transports())}")
    print(
        f"bounds: one-way {sizes['count']:,} messages or {sizes['seconds']:g} s; request/reply "
        f"{sizes['count_rr']:,} sequential + {sizes['count']:,} with "
        f"{sizes['outstanding']} in flight, each or {sizes['seconds']:g} s; each value the best "
        f"of {sizes['repeat']} turn(s)"
        + ("; receivers pinned to the last CPU, senders to the first\n" if sizes["pin"] else "\n"),
        flush=True,
    )
    started = time.monotonic()
    rendered: list[str] = []
    loops = tuple(dict.fromkeys(x for x in args.loops.split(",") if x))
    if not loops or set(loops) - {"asyncio", "uvloop"}:
        parser.error(f"--loops takes asyncio and/or uvloop, got {args.loops!r}")
    tables = scenarios.build_tables([s for s in sections if s in scenarios.TRANSPORTS], loops)
    for table in tables:
        scenarios.measure(table, sizes, lambda text: print(text, flush=True))
        text = render(table)
        rendered.append(text)
        print("\n" + text + "\n", flush=True)
    memory: dict[str, Any] = {}
    if "memory" in sections:
        memory = memcheck.run(args.quick, lambda text: print(text, flush=True))
        print("\n" + memcheck.render(memory) + "\n", flush=True)
    scaled: dict[str, Any] = {}
    if "scale" in sections:
        plots = args.plots
        if plots is None:
            plots = ROOT / "docs" / "img"
            if args.quick:
                import tempfile

                plots = Path(tempfile.mkdtemp(prefix="distro-scale-"))
        scaled = scale.run(args.quick, lambda text: print(text, flush=True), plots)
        print("\n" + scale.render(scaled) + "\n", flush=True)
    cost_split: dict[str, Any] = {}
    if "costs" in sections:
        cost_split = costs.run(args.quick, lambda text: print(text, flush=True))
        print("\n" + costs.render(cost_split) + "\n", flush=True)
    code = 0
    micro: dict[str, float] = {}
    if "micro" in sections:
        code, micro = run_micro(args.quick)
    verdicts = targets.check(tables, memory, micro)
    if verdicts:
        print("\n" + targets.render(verdicts))
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "sizes": sizes,
                    "tables": {
                        (t.name if t.loop == "asyncio" else f"{t.name}@{t.loop}"): {
                            f"{k[0]}|{k[1]}": v for k, v in t.values.items()
                        }
                        for t in tables
                    },
                    "memory": memory,
                    "scale": scaled,
                    "costs": cost_split,
                    "micro_median_seconds": micro,
                },
                indent=2,
                default=str,
            )
        )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
