"""Running on uvloop (the ``uvloop`` extra): the bundled transports served and called on a
uvloop loop (udp4, udp6, tcp, tcp with TLS, memory), a paused udp server on it (uvloop's
datagram transport cannot pause reading), ``server.run(loop=...)`` and ``service.run(loop=...)``,
the ``distro`` command's ``--loop``, and the pytest plugin's ``--distro-loop`` and
``distro_loop`` marker. The conformance kit over the bundled transports on uvloop is
tests/test_conformance_uvloop.py.

A test that needs uvloop missing hides it: a directory first on ``PYTHONPATH`` holds a
``uvloop`` package whose import fails, as it does where uvloop is not installed.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _cli import DISTRO, distro, free_port, running
from _tls_certs import Certs, make_certs

import distro_core as distro_lib
from distro_core.testing import Recorder, wait_until

uvloop = pytest.importorskip("uvloop")

EXTRA = "pip install 'distro-core[uvloop]'"

LOOP_APP = textwrap.dedent(
    """
    import asyncio
    import distro_core as distro

    def loop_name(msg):
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    service = distro.Service("loops", transport="tcp")
    service.get("/loop", loop_name)
    server = distro.create("tcp").server(port=0)
    server.get("/loop", loop_name)
    """
)


def _loop_name() -> str:
    """``"uvloop"`` on a uvloop loop, ``"asyncio"`` on asyncio's."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def hidden(tmp_path: Path) -> Path:
    """A directory that, first on the import path, makes ``import uvloop`` fail."""
    directory = tmp_path / "hide"
    (directory / "uvloop").mkdir(parents=True)
    (directory / "uvloop" / "__init__.py").write_text(
        'raise ImportError("uvloop is hidden for this test")\n'
    )
    return directory


def _hide(monkeypatch: pytest.MonkeyPatch, hidden: Path) -> None:
    """Make ``import uvloop`` fail in the processes this test starts."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))
    )


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch, hidden: Path) -> Iterator[None]:
    """uvloop missing, in this process (``sys.modules``) and in the ones it starts."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    _hide(monkeypatch, hidden)
    yield


# -- the transports on a uvloop loop ----------------------------------------------------------

CASES = ["udp4", "udp6", "tcp", "tcp-tls", "memory"]


def _options(case: str, certs: Certs) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The transport name, server options and client options of ``case``."""
    if case == "tcp-tls":
        server = {"port": 0, "certfile": certs.server, "cafile": certs.ca}
        return "tcp", server, {"cafile": certs.ca, "certfile": certs.client}
    return case, {"port": 0}, {}


@pytest.mark.distro_loop("uvloop")
@pytest.mark.parametrize("case", CASES)
async def test_servers_and_clients_work_on_uvloop(case: str, certs: Certs) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    name, server_options, client_options = _options(case, certs)
    factory = distro_lib.create(name)
    server = factory.server(server_options)
    got = Recorder()
    server.post("/note", got)
    server.get("/loop/{n}", lambda msg: {"n": int(msg.params["n"]), "loop": _loop_name()})
    async with server, factory.client(client_options, port=server.address[1]) as client:
        reply = await client.request(distro_lib.message({"uri": "/loop/1"}), timeout=5)
        assert reply.payload == {"n": 1, "loop": "uvloop"}
        replies = await asyncio.gather(
            *(
                client.request(distro_lib.message({"uri": f"/loop/{n}"}), timeout=5)
                for n in range(50)
            )
        )
        assert [r.payload["n"] for r in replies] == list(range(50))
        for n in range(20):
            await client.send(distro_lib.message({"uri": "/note", "verb": "POST"}, n))
        await got.wait_for(20)
        assert sorted(got.payloads) == list(range(20))
        await client.send(distro_lib.message({"uri": "/note", "verb": "POST"}, 20), confirm=True)
        assert 20 in got.payloads
    if case == "tcp-tls":
        assert server.stats.dropped.get("tls_handshake", 0) == 0


async def _paused_udp_server(
    receive_buffer: int, count: int, size: int
) -> tuple[distro_lib.Server, asyncio.Event, list[int]]:
    """A udp4 server that takes one message at a time (``max_concurrency=1``), whose first
    handler call waits for the returned event, and a client that sent it ``count`` one-way
    messages of about ``size`` bytes meanwhile. The caller closes the server."""
    factory = distro_lib.create("udp4")
    server = factory.server(port=0, receive_buffer=receive_buffer, max_concurrency=1)
    gate = asyncio.Event()
    handled: list[int] = []

    @server.post("/work")
    async def work(msg: distro_lib.Message) -> None:
        await gate.wait()
        handled.append(msg.payload["n"])

    await server.start()
    async with factory.client(port=server.address[1]) as client:
        for n in range(count):
            await client.send(
                distro_lib.message({"uri": "/work", "verb": "POST"}, {"n": n, "pad": "x" * size})
            )
            # One turn of the loop: the server reads it (it may not pause a uvloop socket).
            await asyncio.sleep(0)
    return server, gate, handled


@pytest.mark.distro_loop("uvloop")
async def test_a_paused_udp_server_on_uvloop_holds_datagrams_then_handles_them_all() -> None:
    server, gate, handled = await _paused_udp_server(1024 * 1024, 30, 100)
    try:
        await wait_until(lambda: server.stats.received >= 1, what="the first message")
        assert handled == [] and server.stats.received == 1  # the rest are held, not taken
        gate.set()
        await wait_until(lambda: len(handled) == 30, what="every held message handled")
        assert sorted(handled) == list(range(30))
        assert "receive_buffer" not in server.stats.dropped
    finally:
        gate.set()
        await server.aclose()


@pytest.mark.distro_loop("uvloop")
async def test_a_paused_udp_server_on_uvloop_holds_at_most_receive_buffer_bytes() -> None:
    server, gate, handled = await _paused_udp_server(4096, 12, 1000)
    try:
        await wait_until(lambda: server.stats.dropped.get("receive_buffer", 0) > 0)
        gate.set()
        dropped = server.stats.dropped["receive_buffer"]
        # Held: what fits in 4096 bytes (three messages of about 1,100 bytes encoded).
        await wait_until(lambda: len(handled) + dropped == 12, what="the held messages")
        assert 2 <= len(handled) <= 5, (handled, dropped)
    finally:
        gate.set()
        await server.aclose()


# -- server.run(loop=...) and service.run(loop=...) -------------------------------------------

RUN = """
import asyncio
import sys
import distro_core as distro

def loop_name(msg):
    return type(asyncio.get_running_loop()).__module__.split(".")[0]

kind, loop = sys.argv[1], sys.argv[2]
if kind == "server":
    app = distro.create("tcp").server(port=0)
    app.get("/loop", loop_name)
    serve = lambda: app.run(loop=loop)
else:
    app = distro.Service("loops")
    app.get("/loop", loop_name)
    app.on_startup(lambda: print(repr(app.address), flush=True))
    serve = lambda: app.run("tcp", port=0, loop=loop)
original = app.start
async def start():
    await original()
    if kind == "server":
        print(repr(app.address), flush=True)
app.start = start
serve()
print("closed", flush=True)
"""


@pytest.mark.parametrize(
    ("kind", "loop", "expected"),
    [
        ("server", "uvloop", "uvloop"),
        ("service", "auto", "uvloop"),
        ("server", "asyncio", "asyncio"),
    ],
)
def test_run_serves_on_the_loop_asked_for_until_sigint(
    kind: str, loop: str, expected: str, tmp_path: Path
) -> None:
    assert _serve_and_ask(tmp_path, kind, loop) == expected


def test_auto_without_uvloop_serves_on_asyncio(tmp_path: Path, without_uvloop: None) -> None:
    assert _serve_and_ask(tmp_path, "service", "auto") == "asyncio"


def _serve_and_ask(tmp_path: Path, kind: str, loop: str) -> str:
    """Run RUN's ``kind`` with ``loop`` in a process, ask it its loop, stop it with SIGINT."""
    script = tmp_path / "serve.py"
    script.write_text(RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), kind, loop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=20)
        _, port = ast.literal_eval(line)

        async def ask() -> str:
            async with distro_lib.create("tcp").client(port=port) as client:
                reply = await client.request(distro_lib.message({"uri": "/loop"}), timeout=5)
                return str(reply.payload)

        answer = asyncio.run(ask())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "closed" in out
        return answer
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _no_coroutine_left_unawaited(caught: list[warnings.WarningMessage]) -> None:
    gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_run_on_uvloop_without_it_names_the_extra(without_uvloop: None) -> None:
    server = distro_lib.create("tcp").server(port=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImportError, match=r"pip install 'distro-core\[uvloop\]'"):
            server.run(loop="uvloop")
        _no_coroutine_left_unawaited(caught)
    assert not server.is_serving
    service = distro_lib.Service("svc")
    with pytest.raises(ImportError, match=r"distro-core\[uvloop\]"):
        service.run("tcp", port=0, loop="uvloop")
    with pytest.raises(distro_lib.StateError, match="not bound"):
        service.server  # noqa: B018 - refused before anything was bound


def test_run_refuses_a_loop_it_does_not_know() -> None:
    server = distro_lib.create("tcp").server(port=0)
    with pytest.raises(ValueError, match="'asyncio', 'uvloop' or 'auto'"):
        server.run(loop="trio")  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="serve_until_signalled"):
            server.run(loop=loop)  # type: ignore[arg-type]
    finally:
        loop.close()


async def test_run_inside_a_loop_is_still_a_state_error() -> None:
    server = distro_lib.create("tcp").server(port=0)
    with pytest.raises(distro_lib.StateError, match="async with"):
        server.run(loop="uvloop")


# -- the distro command's --loop ----------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(LOOP_APP)
    return tmp_path


def test_distro_run_and_request_on_uvloop(app: Path, tmp_path: Path) -> None:
    port = free_port()
    args = ["run", "app:service", "-o", f"port={port}", "--loop", "uvloop"]
    with running(args, tmp_path, "svc", cwd=app) as svc:
        svc.wait_for("ready on tcp")
        asked = distro("request", "tcp", "/loop", "-o", f"port={port}", "--loop", "uvloop")
        assert asked.returncode == 0, asked.stderr
        assert asked.stdout.strip() == '"uvloop"'
        assert svc.stop(signal.SIGINT) == 0, svc.stderr()


def test_distro_listen_and_send_on_uvloop(tmp_path: Path) -> None:
    port = free_port()
    args = ["listen", "udp4", "/note", "-o", f"port={port}", "--count", "1", "--loop", "uvloop"]
    with running(args, tmp_path, "listen") as listener:
        listener.wait_for("listening on udp4 127.0.0.1:")
        sent = distro(
            "send", "udp4", "/note", "-X", "POST", "-d", '{"n": 1}', "-o", f"port={port}",
            "--loop", "uvloop", "--confirm",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert listener.proc.wait(20) == 0
        assert listener.proc.stdout is not None
        assert '"payload": {"n": 1}' in listener.proc.stdout.read()


def test_distro_run_workers_on_uvloop(app: Path, tmp_path: Path) -> None:
    port = free_port()
    args = ["run", "app:service", "-o", f"port={port}", "--workers", "2", "--loop", "uvloop"]
    with running(args, tmp_path, "workers", cwd=app) as parent:
        parent.wait_for("ready on tcp")
        asked = distro("request", "tcp", "/loop", "-o", f"port={port}")
        assert asked.stdout.strip() == '"uvloop"', asked.stderr
        assert parent.stop() == 0, parent.stderr()


def test_distro_loop_uvloop_without_it_is_a_usage_error(
    app: Path, tmp_path: Path, without_uvloop: None
) -> None:
    for command in (
        ["run", "app:server", "--loop", "uvloop"],
        ["request", "tcp", "/loop", "-o", "port=9", "--loop", "uvloop"],
        ["send", "tcp", "/loop", "-o", "port=9", "--loop", "uvloop"],
        ["listen", "tcp", "--loop", "uvloop"],
    ):
        done = distro(*command, cwd=app)
        assert done.returncode == 2, done
        assert done.stderr.strip() == (
            f"distro {command[0]}: error: --loop uvloop needs uvloop, which is not installed: "
            f"{EXTRA}"
        )


def test_distro_run_auto_without_uvloop_serves_on_asyncio(
    app: Path, tmp_path: Path, without_uvloop: None
) -> None:
    port = free_port()
    args = ["run", "app:service", "-o", f"port={port}", "--loop", "auto"]
    with running(args, tmp_path, "svc", cwd=app) as svc:
        svc.wait_for("ready on tcp")
        asked = distro("request", "tcp", "/loop", "-o", f"port={port}", "--loop", "auto")
        assert asked.stdout.strip() == '"asyncio"', asked.stderr
        assert svc.stop() == 0, svc.stderr()


def test_the_loop_option_is_in_every_commands_help() -> None:
    for command in ("run", "send", "request", "listen"):
        assert "--loop [asyncio|auto|uvloop]" in distro(command, "--help").stdout
    assert DISTRO.exists()


# -- the pytest plugin: --distro-loop, the distro_loop ini option and marker ------------------

PROJECT = """
    import asyncio
    import pytest

    def loop_name():
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    @pytest.mark.distro_async
    async def test_session_loop():
        print("session:", loop_name())

    @pytest.mark.distro_async
    @pytest.mark.distro_loop("uvloop")
    async def test_marked_loop():
        print("marked:", loop_name())
"""


def _pytest(project: Path, *args: str, ini: str = "") -> subprocess.CompletedProcess[str]:
    (project / "test_project.py").write_text(textwrap.dedent(PROJECT), encoding="utf-8")
    (project / "pytest.ini").write_text(f"[pytest]\n{ini}", encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_plugin_runs_tests_on_the_loop_asked_for(tmp_path: Path) -> None:
    plain = _pytest(tmp_path)
    assert "session: asyncio" in plain.stdout and "marked: uvloop" in plain.stdout, plain.stdout
    # The command line's option wins over the ini option; auto is uvloop where it is installed.
    option = _pytest(tmp_path, "--distro-loop", "auto", ini="distro_loop = asyncio\n")
    assert "session: uvloop" in option.stdout and "2 passed" in option.stdout, option.stdout


def test_the_plugin_refuses_uvloop_when_it_is_missing(
    tmp_path: Path, hidden: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hide(monkeypatch, hidden)
    done = _pytest(tmp_path, ini="distro_loop = uvloop\n")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert EXTRA in done.stderr
