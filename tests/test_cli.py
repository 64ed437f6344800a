"""The ``distro`` console script, driven for real in subprocesses (loopback, bounded in time):
run, send, request, listen, transports, and what each says about bad input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _cli import DISTRO, distro, free_port, running

SERVICE = textwrap.dedent(
    """
    import os
    import asyncio
    import distro_core as distro

    service = distro.Service("svc", transport="tcp")
    events = []

    @service.get("/pid")
    def pid(msg):
        return os.getpid()

    @service.post("/echo")
    def echo(msg):
        return {"payload": msg.payload, "trace": msg.headers.get("trace")}

    @service.get("/fail")
    def fail(msg):
        raise ValueError("bad thing")

    @service.get("/slow")
    async def slow(msg):
        await asyncio.sleep(float(msg.payload or 0))
        return "slept"

    @service.on_shutdown
    def bye():
        print("shutdown hook ran", flush=True)

    server = distro.create("tcp").server(port=int(os.environ.get("SERVER_PORT", "0")))
    server.get("/ping", lambda msg: "pong")
    not_a_server = 42
    """
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(SERVICE)
    return tmp_path


def one_error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"distro {command}: error: "), lines[0]
    return lines[0]


def test_help_everywhere() -> None:
    top = distro("--help")
    assert top.returncode == 0
    for command in ("run", "send", "request", "listen", "transports"):
        assert command in top.stdout
        result = distro(command, "--help")
        assert result.returncode == 0 and "Usage: distro " + command in result.stdout
    assert "--workers" in distro("run", "--help").stdout


def test_python_dash_m_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "distro_core", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout.startswith("distro, version ")


def test_without_click_the_error_names_the_extra() -> None:
    code = "import sys; sys.modules['click'] = None; from distro_core.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "pip install 'distro-core[cli]'" in result.stderr


def test_transports_as_a_table_and_as_json() -> None:
    table = distro("transports")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "CAPABILITIES"]
    tcp = next(row for row in rows if row.split()[0] == "tcp")
    assert tcp.split()[1:3] == ["distro-core", "0.2.0"] and "reliable" in tcp
    listed = json.loads(distro("transports", "--json").stdout)
    by_name = {item["name"]: item for item in listed}
    assert by_name["udp4"]["capabilities"]["reliable"] is False
    assert by_name["tcp"]["distribution"] == "distro-core"
    assert by_name["tcp"]["capabilities"]["max_message_size"] == 1 << 20
    assert set(by_name) == {row.split()[0] for row in rows}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nosuch:service"], "cannot import module 'nosuch'"),
        (["app:missing"], "has no attribute 'missing'"),
        (["app:not_a_server"], "app:not_a_server is a int, not a distro.Service"),
        (["app"], "write the target as module:attribute"),
        (["app:service", "--option", "port=abc"], "tcp option 'port' must be an integer"),
        (["app:service", "--option", "colour=blue"], "unknown option(s) colour"),
        (["app:service", "--option", "nokey"], "--option 'nokey': write it as key=value"),
        (["app:service", "--transport", "pigeonx"], "available: "),
        (["app:server", "--option", "port=1"], "--transport and --option apply to a"),
        (["app:service", "--workers", "2"], "share one port: give it"),
        (["app:service", "-t", "memory", "--workers", "2"], "'memory' does not cross processes"),
        (["app:service", "-o", "port=5", "--workers", "2", "--reload"], "cannot be combined"),
    ],
)
def test_run_refuses_bad_input_in_one_line(app: Path, args: list[str], says: str) -> None:
    line = one_error_line(distro("run", *args, cwd=app), "run")
    assert says in line


def test_run_on_a_port_in_use_says_so_in_one_line(app: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = distro("run", "app:service", "--option", f"port={port}", cwd=app)
    line = one_error_line(result, "run")
    assert str(port) in line and "in use" in line
    assert result.returncode == 1


def test_debug_shows_the_traceback(app: Path) -> None:
    result = distro("run", "app:service", "-o", "port=abc", "--log-level", "debug", cwd=app)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("distro run: error: ")


def test_an_error_raised_while_importing_the_app_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import json\nraise RuntimeError('no config file')\n")
    line = one_error_line(distro("run", "broken:service", cwd=tmp_path), "run")
    assert "RuntimeError: no config file" in line and "--log-level debug" in line


def test_run_serves_until_sigterm_and_request_talks_to_it(app: Path, tmp_path: Path) -> None:
    port = free_port()
    args = ["run", "app:service", "--option", f"port={port}", "--log-format", "json"]
    with running(args, tmp_path, "svc", cwd=app) as svc:
        svc.wait_for('"event": "ready"')
        reply = distro(
            "request",
            "tcp",
            "/echo",
            "-X",
            "POST",
            "-o",
            f"port={port}",
            "--payload",
            '{"n": [1, 2]}',
            "--header",
            "trace=abc",
        )
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout) == {"payload": {"n": [1, 2]}, "trace": "abc"}
        pid = distro("request", "tcp", "/pid", "-o", f"port={port}")
        assert json.loads(pid.stdout) == svc.proc.pid

        failed = distro("request", "tcp", "/fail", "-o", f"port={port}")
        line = one_error_line(failed, "request")
        assert failed.returncode == 1
        assert "remote error (handler_error): " in line

        slow = distro(
            "request", "tcp", "/slow", "-o", f"port={port}", "-d", "5", "--timeout", "0.3"
        )
        assert "within 0.3s" in one_error_line(slow, "request")
        assert svc.stop() == 0
        out = svc.proc.stdout.read() if svc.proc.stdout else ""
    assert "shutdown hook ran" in out
    records = [json.loads(line) for line in svc.stderr().splitlines()]
    events = [r.get("event") for r in records]
    assert events.index("started") < events.index("ready") < events.index("signal")
    started = records[events.index("started")]
    assert started["port"] == port and started["transport"] == "tcp"
    failed_record = records[events.index("handler_failed")]
    assert failed_record["exc_type"] == "ValueError" and failed_record["uri"] == "/fail"
    assert records[events.index("signal")]["signal"] == "SIGTERM"
    assert records[events.index("closed")]["stats"]["handler_errors"] == 1


def test_run_serves_a_plain_server_and_says_where(app: Path, tmp_path: Path) -> None:
    with running(["run", "app:server"], tmp_path, "server", cwd=app) as svc:
        svc.wait_for("distro: serving tcp")
        line = next(line for line in svc.stderr().splitlines() if "serving" in line)
        port = int(line.rsplit(":", 1)[1])  # port 0: the log line tells the real one
        pong = distro("request", "tcp", "/ping", "-o", f"port={port}")
        assert json.loads(pong.stdout) == "pong"
        assert svc.stop(signal.SIGINT) == 0
    assert "SIGINT received" in svc.stderr()


def test_send_and_listen(tmp_path: Path) -> None:
    port = free_port()
    args = ["listen", "tcp", "/order/{id}", "-o", f"port={port}", "--count", "2"]
    with running(args, tmp_path, "listen") as listener:
        listener.wait_for("listening on tcp 127.0.0.1:")
        (tmp_path / "order.json").write_text('{"amount": 12}')
        first = distro(
            "send",
            "tcp",
            "/order/7",
            "-X",
            "post",
            "-o",
            f"port={port}",
            "--payload",
            "@" + str(tmp_path / "order.json"),
        )
        assert first.returncode == 0, first.stderr
        # Not matched by the pattern: no line for it (a one-way send is not answered).
        distro("send", "tcp", "/other", "-o", f"port={port}")
        second = distro(
            "send",
            "tcp",
            "/order/8",
            "-X",
            "PUT",
            "-o",
            f"port={port}",
            "--payload",
            "-",
            "--confirm",
            stdin='"from stdin"',
        )
        assert second.returncode == 0, second.stderr
        assert listener.proc.wait(20) == 0
        assert listener.proc.stdout is not None
        lines = [json.loads(line) for line in listener.proc.stdout.read().splitlines()]
    assert [
        (m["headers"]["uri"], m["headers"]["verb"], m["payload"], m["params"]) for m in lines
    ] == [
        ("/order/7", "POST", {"amount": 12}, {"id": "7"}),
        ("/order/8", "PUT", "from stdin", {"id": "8"}),
    ]
    assert all(len(m["id"]) == 36 for m in lines)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (
            '{"a": 1,}',
            "not valid JSON: Expecting property name enclosed in double quotes at "
            "line 1 column 9 (character 8)",
        ),
        ("[1, 2", "line 1 column 6 (character 5)"),
        ("@/nonexistent/file.json", "cannot read /nonexistent/file.json"),
    ],
)
def test_a_bad_payload_names_the_position(payload: str, says: str) -> None:
    result = distro("send", "tcp", "/x", "-o", "port=1", "--payload", payload)
    assert says in one_error_line(result, "send")
    assert result.returncode == 2


def test_send_to_nobody_fails_in_one_line() -> None:
    result = distro("send", "tcp", "/x", "-o", f"port={free_port()}", "-o", "connect_timeout=0.3")
    assert "nothing listens" in one_error_line(result, "send")


def test_ctrl_c_during_a_request_exits_130_at_once(tmp_path: Path) -> None:
    # A tcp server that takes the request and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        proc = subprocess.Popen(
            [str(DISTRO), "request", "tcp", "/x", "-o", f"port={port}", "--timeout", "60"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            silent.settimeout(20)
            conn, _ = silent.accept()
            with conn:
                conn.settimeout(20)
                assert conn.recv(65536)  # the request was written: it waits for the reply
                started = time.monotonic()
                proc.send_signal(signal.SIGINT)
                status = proc.wait(10)
                took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert status == 130
    assert took < 3, took
    assert proc.stderr is not None and "interrupted" in proc.stderr.read()
