"""``distro run``: serve a service or server in this process, in ``--workers`` processes, or
restarted on source changes (``--reload``)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .._factory import create
from .._loops import run as run_on
from .._server import Server
from .._service import Service
from ._loading import load
from ._values import UsageProblem

__all__ = ["child_command", "run_reloading", "run_workers", "serve", "worker_options"]

log = logging.getLogger("distro.cli")


def serve(
    target: str,
    transport: str | None,
    options: dict[str, Any],
    app_dir: str,
    metrics: tuple[str, int] | None = None,
    loop: str = "asyncio",
) -> None:
    """Load ``target`` and serve it here until SIGINT or SIGTERM, then close gracefully.

    :param metrics: ``(address, port)`` to serve Prometheus metrics on (``--metrics-port``).
    :param loop: the event loop (``--loop``), checked by the caller.
    :raises UsageProblem: a bad target, or ``--transport``/``--option`` for a plain server;
        metrics asked for without prometheus-client, or on a port in use.
    """
    app = load(target, app_dir)
    if isinstance(app, Server):
        if transport is not None or options:
            raise UsageProblem(
                f"{target} is a distro.Server, already made with its transport and options; "
                "--transport and --option apply to a distro.Service"
            )
        if metrics is not None:
            _serve_metrics(app, *metrics)
        run_on(app.serve_until_signalled, loop)
        return
    server = app.bind(transport, **options)
    if metrics is not None:
        _serve_metrics(server, *metrics)
    run_on(app.serve_until_signalled, loop)


def _serve_metrics(server: Server, address: str, port: int) -> None:
    """Add the Metrics middleware to ``server`` (not started yet) and serve the metrics over
    HTTP at ``address:port`` (``/metrics``), in a thread of prometheus-client's."""
    try:
        import prometheus_client

        from ..middleware._metrics import Metrics
    except ImportError:
        raise UsageProblem(
            "--metrics-port needs prometheus-client: pip install 'distro-core[prometheus]'"
        ) from None
    server._middleware = (*server._middleware, Metrics(transport=server.transport.name))
    try:
        prometheus_client.start_http_server(port, address)
    except OSError as exc:
        raise UsageProblem(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
    log.info(
        "distro: metrics on http://%s:%d/metrics",
        address,
        port,
        extra={"event": "metrics", "address": address, "port": port},
    )


def worker_options(
    target: str, transport: str | None, options: dict[str, Any], app_dir: str
) -> tuple[str, dict[str, Any]]:
    """The transport name and the options with which workers share the load: ``group=`` over
    transports with groups, ``reuse_port=True`` over those that take it (tcp, udp).

    :raises UsageProblem: the target is not a service, or its transport cannot share.
    """
    app = load(target, app_dir)
    if not isinstance(app, Service):
        raise UsageProblem(
            f"--workers needs a distro.Service ({target} is a {type(app).__name__} made with "
            "its options already)"
        )
    name = transport or app.transport
    if name is None:
        raise UsageProblem(f"service {app.name!r} names no transport: give --transport NAME")
    factory = create(name)
    merged = {**app.options, **options}
    factory.server(merged)  # the options are good before workers multiply them
    caps = factory.transport.capabilities
    if not caps.cross_process:
        raise UsageProblem(f"--workers: transport {name!r} does not cross processes")
    if caps.groups:
        return name, {**options, "group": merged.get("group", app.name)}
    if not merged.get("port"):
        raise UsageProblem(
            f"--workers over {name!r} share one port: give it (--option port=N), not port 0"
        )
    try:
        factory.server({**merged, "reuse_port": True})
    except TypeError as exc:
        raise UsageProblem(
            f"--workers: transport {name!r} cannot share messages between processes "
            f"(no groups, no reuse_port): {exc}"
        ) from exc
    return name, {**options, "reuse_port": True}


def child_command(
    target: str,
    transport: str | None,
    options: dict[str, Any],
    app_dir: str,
    log_level: str,
    log_format: str,
    loop: str = "asyncio",
) -> list[str]:
    """The ``distro run`` command line of one worker (or of the process ``--reload``
    restarts)."""
    cmd = [sys.executable, "-m", "distro_core", "run", target, "--app-dir", app_dir]
    if transport is not None:
        cmd += ["--transport", transport]
    for key, item in options.items():
        cmd += ["--option", f"{key}={json.dumps(item)}"]
    return [*cmd, "--loop", loop, "--log-level", log_level, "--log-format", log_format]


def run_workers(cmd: Sequence[str], count: int) -> int:
    """Run ``count`` processes of ``cmd`` until SIGINT or SIGTERM (passed on to them as
    SIGTERM) or until one exits by itself (then the others are stopped).

    :returns: the exit status: 0 when every worker closed cleanly after a signal.
    """
    procs = [subprocess.Popen(list(cmd)) for _ in range(count)]
    log.info(
        "distro: %d workers started (pids %s)",
        count,
        ", ".join(str(p.pid) for p in procs),
        extra={"event": "workers", "pids": [p.pid for p in procs]},
    )
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info(
                "distro: %s received, stopping %d workers",
                signal.Signals(signum).name,
                count,
                extra={"event": "signal", "signal": signal.Signals(signum).name},
            )
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    failed = False
    while True:
        codes = [proc.poll() for proc in procs]
        if all(code is not None for code in codes):
            break
        if not stopping:
            for proc, code in zip(procs, codes, strict=True):
                if code is not None:
                    log.error(
                        "distro: worker %d exited with status %d; stopping the others",
                        proc.pid,
                        code,
                        extra={"event": "worker_exited", "pid": proc.pid, "status": code},
                    )
                    failed = True
                    stop(signal.SIGTERM, None)
                    break
        time.sleep(0.05)
    return 1 if failed or any(proc.returncode for proc in procs) else 0


def run_reloading(cmd: Sequence[str], directories: Sequence[str]) -> int:
    """Run ``cmd`` and restart it whenever a source file under ``directories`` changes,
    until SIGINT or SIGTERM.

    :raises UsageProblem: watchfiles (the ``reload`` extra) is not installed.
    """
    try:
        import watchfiles
    except ImportError as exc:
        raise UsageProblem("--reload needs watchfiles: pip install 'distro-core[reload]'") from exc

    def changed(changes: set[tuple[Any, str]]) -> None:
        paths = sorted({os.path.relpath(path) for _, path in changes})
        log.info(
            "distro: %s changed; restarting",
            ", ".join(paths),
            extra={"event": "reload", "paths": paths},
        )

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    log.info(
        "distro: watching %s for changes",
        ", ".join(directories),
        extra={"event": "watching", "paths": list(directories)},
    )
    watchfiles.run_process(
        *directories,
        target=shlex.join(cmd),
        target_type="command",
        callback=changed,
        watch_filter=watchfiles.PythonFilter(),
        debounce=300,
    )
    return 0
