"""The PNGs of the scale figures (bench/scale.py): one per variable, log x axes.

matplotlib is a benchmark-only dependency (bench/requirements.txt), imported only here and
only when plotting, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scale import GROUP_TRANSPORTS, size_label


def plot(result: dict[str, Any], directory: Path) -> list[str]:
    """Write ``scale-clients.png``, ``scale-routes.png``, ``scale-payload.png`` and
    ``scale-replicas.png`` (those with at least one point) into ``directory``.

    :returns: the paths written.
    :raises ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    directory.mkdir(parents=True, exist_ok=True)
    whole = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.2g}")
    turns = result["bounds"]["repeat"]
    note = (
        f"{result.get('nproc')} cores shared by every process, loopback; "
        f"each point the best of {turns} turn(s) of {result['bounds']['seconds']:g} s"
    )
    written: list[str] = []

    def axes(
        ax: Any, xlabel: str, ylabel: str, xs: list[float], *, base: int = 10, logy: bool = False
    ) -> None:
        ax.set_xscale("log", base=base)
        ax.set_xticks(xs)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if logy:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            # From zero, with room above the highest point: a flat line must look flat.
            top = max((line.get_ydata().max() for line in ax.get_lines()), default=1.0)
            ax.set_ylim(0, top * 1.15)
        ax.yaxis.set_major_formatter(whole)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)

    def save(fig: Any, name: str, title: str) -> None:
        fig.suptitle(title, fontsize=12)
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=8, color="0.35")
        fig.tight_layout(rect=(0, 0.04, 1, 0.95))
        path = directory / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))

    ok = [p for p in result["clients"] if "error" not in p]
    if ok:
        xs = [p["clients"] for p in ok]
        fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4.4))
        left.plot(xs, [p["rate"] for p in ok], "o-")
        axes(left, "tcp clients (one-way, all to one server)", "messages received / s", xs)
        middle.plot(xs, [p["server_cpu_us"] for p in ok], "o-", color="C4")
        axes(middle, "tcp clients", "server CPU time per message (µs)", xs)
        middle.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        for key, style, label in (
            ("rss_before_kib", ":", "before the clients connect"),
            ("rss_connected_kib", "o-", "all connected"),
            ("rss_end_kib", "s--", "after the flood"),
        ):
            right.plot(xs, [p[key] / 1024 for p in ok], style, label=label)
        axes(right, "tcp clients", "server RSS (MiB)", xs)
        right.legend(loc="lower right", fontsize=9)
        save(fig, "scale-clients.png", "distro tcp server: throughput and memory vs clients")

    ok = [p for p in result["routes"] if "error" not in p]
    if ok:
        fig, ax = plt.subplots(figsize=(7.5, 4.4))
        for mode, style, label in (
            ("spread", "o-", "round-robin over all routes"),
            ("one", "s--", "all to the last route registered"),
        ):
            pts = [p for p in ok if p["mode"] == mode or p["routes"] == 1]
            ax.plot([p["routes"] for p in pts], [p["rate"] for p in pts], style, label=label)
        axes(ax, "static routes on the server", "messages received / s", [p["routes"] for p in ok])
        ax.legend(loc="lower left", fontsize=9)
        save(fig, "scale-routes.png", "distro tcp one-way: throughput vs routes")

    ok = [p for p in result["payload"] if "rate" in p]
    if ok:
        xs = [p["size"] for p in ok]
        fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.4))
        a.plot(xs, [p["rate"] for p in ok], "o-")
        axes(a, "payload", "messages received / s (log)", xs, logy=True)
        b.plot(xs, [p["mb_per_s"] for p in ok], "o-", color="C1")
        axes(b, "payload", "payload MB/s", xs)
        rr = [p for p in ok if "rr_p50" in p]
        if rr:
            sizes = [p["size"] for p in rr]
            c.plot(sizes, [p["rr_p50"] / 1000 for p in rr], "o-", color="C2", label="p50")
            c.plot(sizes, [p["rr_p99"] / 1000 for p in rr], "s--", color="C3", label="p99")
            c.legend(loc="upper left", fontsize=9)
        axes(
            c, "payload (sent and echoed back)", "request/reply round trip, ms (log)", xs, logy=True
        )
        for ax in (a, b, c):
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: size_label(round(v))))
        save(fig, "scale-payload.png", "distro tcp: throughput and latency vs payload size")

    ok = [p for p in result["replicas"] if "rate" in p]
    if ok:
        fig, ax = plt.subplots(figsize=(7.5, 4.4))
        for name, style in zip(GROUP_TRANSPORTS, ("o-", "s--"), strict=True):
            pts = [p for p in ok if p["transport"] == name]
            if pts:
                ax.plot([p["members"] for p in pts], [p["rate"] for p in pts], style, label=name)
        axes(
            ax,
            "server processes in the group",
            "messages consumed / s",
            [p["members"] for p in ok],
            base=2,
        )
        ax.legend(loc="lower left", fontsize=9)
        ax.set_title(
            f"{result.get('nproc')} cores shared by the sender, the members and the broker:\n"
            "not a test of how a group scales on more cores",
            fontsize=9,
        )
        save(fig, "scale-replicas.png", "distro groups: throughput vs replicas")
    return written
