"""Profiles of one side of a scenario, for ``run.py --profile DIR``: cProfile (exact call counts,
but it inflates the cost of every Python call) or py-spy (sampling, unbiased, native frames
left out), printed as the functions where the process spent its own time."""

from __future__ import annotations

import collections
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_profiled(fn: Callable[..., None], args: tuple[Any, ...], params: dict[str, Any]) -> None:
    """Run ``fn(*args)`` under the profiler ``params["profiler"]`` names; print the top."""
    name = f"{params['transport']}-{params.get('label', 'run')}-{fn.__name__}"
    if params.get("profiler") == "py-spy":
        _pyspy(fn, args, Path(params["profile"]) / f"{name}.pyspy.txt", name)
    else:
        _cprofile(fn, args, Path(params["profile"]) / f"{name}.prof", name)


def _cprofile(fn: Callable[..., None], args: tuple[Any, ...], path: Path, name: str) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn(*args)
    finally:
        profiler.disable()
        profiler.dump_stats(path)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        body = text.getvalue()
        body = body[body.find("   ncalls") :]
        print(
            f"\n--- cProfile of distro {name} (own time; saved as {path}) ---\n{body}", flush=True
        )


def _pyspy(fn: Callable[..., None], args: tuple[Any, ...], path: Path, name: str) -> None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "--pid", str(os.getpid()), "--rate", "1000", "--format", "raw"]
    spy = subprocess.Popen(
        [*cmd, "--nonblocking", "--output", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fn(*args)
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            spy.wait(15)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        print(f"\n--- py-spy of distro {name} (saved as {path}) ---\n{summarize(path)}", flush=True)


def summarize(path: Path, top: int = 22) -> str:
    """The functions with the most samples on top of the stack (own time) in a py-spy raw file,
    and the share of samples each of the distro functions appears in (inclusive)."""
    if not path.exists():
        return "(no samples: py-spy could not attach)"
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples while busy; own time:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive (distro_core / plugins):")
    mine = [(f, n) for f, n in inclusive.most_common() if "distro" in f and "distro_side" not in f]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in mine[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"; the line differs per sample.
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    keep = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{func} ({keep})"
