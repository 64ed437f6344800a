"""Getting a real NATS for the tests: the shared one, or a nats-server of the tests' own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

SHARED_NATS = ("127.0.0.1", 4222)
HOW_TO_GET_NATS = (
    "these tests need NATS: start one on 127.0.0.1:4222 "
    "(apt-get install nats-server && nats-server -a 127.0.0.1 -p 4222 -js &) "
    "or put nats-server on PATH so the tests can start their own"
)


def unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) a test that cannot get the NATS it needs."""
    message = f"{reason}; {HOW_TO_GET_NATS}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def answers(host: str, port: int) -> bool:
    """Whether a NATS server greets a connection at ``host:port`` (its INFO line)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsProcess:
    """A ``nats-server`` of the tests' own on 127.0.0.1 (core NATS, nothing on disk)."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"nats://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait (bounded) until it answers."""
        self._proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not answers("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server on port {self.port} did not come up")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGKILL: no lame-duck goodbye) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)


def nats_binary() -> str | None:
    """The nats-server to start, if there is one."""
    found = shutil.which("nats-server")
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if found is None and os.path.exists(path):
            found = path
    return found
