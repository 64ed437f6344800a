"""The ``distro`` command (click): run, send, request, listen, transports.

Errors are one line on standard error and a non-zero exit status (1: it failed; 2: bad usage;
130: interrupted); ``--log-level debug`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import click

from .. import __version__
from .._exceptions import DistroError, RemoteError
from .._factory import create, transports
from .._loops import LOOPS, loop_factory
from .._loops import run as run_on
from .._message import VERBS, Message, message
from ._logs import LEVELS, configure
from ._run import child_command, run_reloading, run_workers, serve, worker_options
from ._values import UsageProblem, key_values, payload

__all__ = ["cli"]

_F = TypeVar("_F", bound=Callable[..., Any])

_debug = False


@contextmanager
def _errors(command: str) -> Iterator[None]:
    """Turn what goes wrong into one line on standard error and an exit status."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"distro {command}: interrupted", err=True)
        sys.exit(130)
    except (click.exceptions.Exit, click.ClickException, SystemExit):
        raise
    except UsageProblem as exc:
        _fail(command, str(exc), 2, exc)
    except RemoteError as exc:
        code = f" ({exc.code})" if getattr(exc, "code", None) else ""
        _fail(command, f"remote error{code}: {exc.remote}", 1, exc)
    except Exception as exc:
        _fail(command, _describe(exc), 1, exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (DistroError, TypeError, ValueError, OSError, LookupError)):
        return str(exc) or type(exc).__name__
    # Not one of ours: say what it was (the user's code raised it, say, while importing).
    return f"{type(exc).__name__}: {exc} (--log-level debug shows the traceback)"


def _fail(command: str, text: str, status: int, exc: BaseException) -> None:
    if _debug:
        traceback.print_exception(exc, file=sys.stderr)
    line = " ".join(text.split("\n")[0].split()) if not _debug else text
    click.echo(f"distro {command}: error: {line}", err=True)
    sys.exit(status)


def _logging_options(fn: _F) -> _F:
    fn = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Log lines as text, or one JSON object per line (with the structured fields).",
    )(fn)
    return click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        default=None,
        help="Least level logged to standard error (run: info; others: warning). "
        "debug also shows tracebacks of errors.",
    )(fn)


def _setup(level: str | None, fmt: str, default: str) -> str:
    global _debug
    chosen = (level or default).lower()
    _debug = chosen == "debug"
    configure(chosen, fmt)
    return chosen


_LOOP = click.option(
    "--loop",
    type=click.Choice(LOOPS),
    default="asyncio",
    show_default=True,
    help="The event loop: asyncio's own, uvloop (the uvloop extra), or auto (uvloop when "
    "installed, else asyncio's).",
)


def _check_loop(loop: str) -> str:
    """``loop``, once it is known to be available (before anything is loaded or started).

    :raises UsageProblem: ``--loop uvloop`` without uvloop installed.
    """
    try:
        loop_factory(loop)
    except ImportError:
        raise UsageProblem(
            "--loop uvloop needs uvloop, which is not installed: pip install 'distro-core[uvloop]'"
        ) from None
    return loop


_OPTION = click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A transport option (repeatable). VALUE is read as JSON when it parses "
    '(8001, true, null, [1, 2], "text"), else as text (127.0.0.1, shop:).',
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distro")
def cli() -> None:
    """distro: run services and talk to them over any installed transport."""


@cli.command()
@click.argument("target", metavar="MODULE:ATTR")
@click.option("--transport", "-t", default=None, help="Transport name (default: the service's).")
@_OPTION
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes sharing the load (tcp/udp: reuse_port; brokers: a group).",
)
@click.option("--reload", is_flag=True, help="Restart when a .py file changes (watchfiles).")
@click.option(
    "--reload-dir",
    "reload_dirs",
    multiple=True,
    metavar="DIR",
    help="Directory --reload watches (repeatable; default: --app-dir).",
)
@click.option(
    "--app-dir", default=".", show_default=True, help="Directory put first on the import path."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    metavar="N",
    help="Serve Prometheus metrics on this port, at /metrics (the prometheus extra).",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="The address --metrics-port listens on.",
)
@_LOOP
@_logging_options
def run(
    target: str,
    transport: str | None,
    options: tuple[str, ...],
    workers: int,
    reload: bool,
    reload_dirs: tuple[str, ...],
    app_dir: str,
    metrics_port: int | None,
    metrics_address: str,
    loop: str,
    log_level: str | None,
    log_format: str,
) -> None:
    """Serve MODULE:ATTR (a distro.Service or distro.Server) until SIGINT or SIGTERM, then
    close gracefully."""
    level = _setup(log_level, log_format, "info")
    with _errors("run"):
        _check_loop(loop)
        app_dir = os.path.abspath(app_dir)
        opts = key_values(options, "--option")
        if reload and workers > 1:
            raise UsageProblem("--reload and --workers cannot be combined")
        if metrics_port is not None and (reload or workers > 1):
            raise UsageProblem(
                "--metrics-port serves one process's metrics: not with --reload or --workers"
            )
        if reload:
            cmd = child_command(target, transport, opts, app_dir, level, log_format, loop)
            sys.exit(run_reloading(cmd, list(reload_dirs) or [app_dir]))
        if workers > 1:
            name, shared = worker_options(target, transport, opts, app_dir)
            cmd = child_command(target, name, shared, app_dir, level, log_format, loop)
            sys.exit(run_workers(cmd, workers))
        metrics = None if metrics_port is None else (metrics_address, metrics_port)
        serve(target, transport, opts, app_dir, metrics, loop)


def _message_options(fn: _F) -> _F:
    for decorator in reversed(
        [
            click.argument("transport"),
            click.argument("uri"),
            click.option(
                "--verb",
                "-X",
                type=click.Choice(sorted(VERBS), case_sensitive=False),
                default=None,
                help="The message's verb (none: a GET).",
            ),
            click.option(
                "--payload",
                "-d",
                "payload_text",
                default=None,
                metavar="JSON|@FILE|-",
                help="The payload: JSON text, @file holding JSON, or - for standard input.",
            ),
            click.option(
                "--header",
                "-H",
                "headers",
                multiple=True,
                metavar="KEY=VALUE",
                help="A header (repeatable), its VALUE read as --option's.",
            ),
            _OPTION,
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=5.0,
                show_default=True,
                help="Seconds to wait for the reply or confirmation.",
            ),
            _LOOP,
        ]
    ):
        fn = decorator(fn)
    return _logging_options(fn)


def _build(uri: str, verb: str | None, headers: tuple[str, ...], text: str | None) -> Message:
    head: dict[str, Any] = key_values(headers, "--header")
    head["uri"] = uri
    if verb is not None:
        head["verb"] = verb.upper()
    return message(head, payload(text))


@cli.command()
@_message_options
@click.option("--confirm", is_flag=True, help="Wait until the server's handlers finished.")
def send(
    transport: str,
    uri: str,
    verb: str | None,
    payload_text: str | None,
    headers: tuple[str, ...],
    options: tuple[str, ...],
    timeout: float,
    loop: str,
    confirm: bool,
    log_level: str | None,
    log_format: str,
) -> None:
    """Send one message to URI over TRANSPORT (one way; --confirm waits for the handlers)."""
    _setup(log_level, log_format, "warning")
    with _errors("send"):
        _check_loop(loop)
        msg = _build(uri, verb, headers, payload_text)
        opts = key_values(options, "--option")

        async def go() -> None:
            async with create(transport).client(opts) as client:
                if confirm:
                    await client.send(msg, confirm=True, timeout=timeout)
                else:
                    await client.send(msg)

        run_on(go, loop)


@cli.command()
@_message_options
def request(
    transport: str,
    uri: str,
    verb: str | None,
    payload_text: str | None,
    headers: tuple[str, ...],
    options: tuple[str, ...],
    timeout: float,
    loop: str,
    log_level: str | None,
    log_format: str,
) -> None:
    """Send a request to URI over TRANSPORT and print the reply's payload as JSON. Exits 1 on
    a remote error or a time-out."""
    _setup(log_level, log_format, "warning")
    with _errors("request"):
        _check_loop(loop)
        msg = _build(uri, verb, headers, payload_text)
        opts = key_values(options, "--option")

        async def go() -> Any:
            async with create(transport).client(opts) as client:
                return (await client.request(msg, timeout=timeout)).payload

        reply = run_on(go, loop)
        click.echo(json.dumps(reply, ensure_ascii=False))


@cli.command()
@click.argument("transport")
@click.argument("pattern", required=False, metavar="[URI-PATTERN]")
@_OPTION
@click.option(
    "--count",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many messages.",
)
@_LOOP
@_logging_options
def listen(
    transport: str,
    pattern: str | None,
    options: tuple[str, ...],
    count: int | None,
    loop: str,
    log_level: str | None,
    log_format: str,
) -> None:
    """Serve on TRANSPORT and print every message received (or those whose uri matches
    URI-PATTERN, any verb), one JSON object per line: id, headers, payload, params."""
    _setup(log_level, log_format, "warning")
    with _errors("listen"):
        _check_loop(loop)
        opts = key_values(options, "--option")

        async def go() -> None:
            server = create(transport).server(opts)
            done = asyncio.Event()
            seen = 0

            def show(msg: Message) -> None:
                nonlocal seen
                if count is not None and seen >= count:
                    return
                seen += 1
                line = {
                    "id": msg.id,
                    "headers": dict(msg.headers),
                    "payload": msg.payload,
                    "params": dict(msg.params),
                }
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                if count is not None and seen >= count:
                    done.set()

            if pattern is None:
                server.receive(show)
            else:
                for verb in sorted(VERBS):
                    server.route(verb, pattern, show)
            async with server:
                host, port = server.address
                click.echo(f"distro listen: listening on {transport} {host}:{port}", err=True)
                await done.wait()

        run_on(go, loop)


@cli.command(name="transports")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of objects.")
def list_transports(as_json: bool) -> None:
    """List the installed transports: name, distribution, version, capabilities."""
    with _errors("transports"):
        rows: list[dict[str, Any]] = []
        for name, info in sorted(transports().items()):
            try:
                version = importlib.metadata.version(info.distribution)
            except importlib.metadata.PackageNotFoundError:
                version = None
            caps = attrs.asdict(info.transport.capabilities)
            rows.append(
                {
                    "name": name,
                    "distribution": info.distribution,
                    "version": version,
                    "plugin": info.plugin,
                    "capabilities": caps,
                }
            )
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        table = [("NAME", "DISTRIBUTION", "VERSION", "CAPABILITIES")]
        for row in rows:
            caps = row["capabilities"]
            flags = [k for k, v in caps.items() if v is True]
            size = caps.get("max_message_size")
            flags.append(f"max_message_size={size if size is not None else 'none'}")
            table.append(
                (
                    str(row["name"]),
                    str(row["distribution"]),
                    str(row["version"] or "?"),
                    " ".join(flags),
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(3)]
        for r in table:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3])
