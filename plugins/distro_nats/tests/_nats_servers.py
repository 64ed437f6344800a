"""Getting a real NATS for the tests: the shared one, or a nats-server of the tests' own."""

from __future__ import annotations

import os
import shutil
import signal
import socket

from distro_core import testing
from distro_core.testing import free_port as free_port  # the tests import it from here

SHARED_NATS = ("127.0.0.1", 4222)
HOW_TO_GET_NATS = (
    "these tests need NATS: start one on 127.0.0.1:4222 "
    "(apt-get install nats-server && nats-server -a 127.0.0.1 -p 4222 -js &) "
    "or put nats-server on PATH so the tests can start their own"
)


def unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) a test that cannot get the NATS it needs."""
    testing.unavailable(reason, HOW_TO_GET_NATS)


def answers(host: str, port: int) -> bool:
    """Whether a NATS server greets a connection at ``host:port`` (its INFO line)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


class NatsProcess(testing.ServerProcess):
    """A ``nats-server`` of the tests' own on 127.0.0.1 (core NATS, nothing on disk), stopped
    with SIGKILL (no lame-duck goodbye)."""

    stop_signal = signal.SIGKILL

    def __init__(self, binary: str, port: int) -> None:
        super().__init__(binary, port)
        self.url = f"nats://127.0.0.1:{port}"

    def argv(self) -> list[str]:
        """``nats-server`` on the port, loopback only."""
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]

    def answers(self) -> bool:
        """Whether it greets a connection."""
        return answers("127.0.0.1", self.port)


def nats_binary() -> str | None:
    """The nats-server to start, if there is one."""
    found = shutil.which("nats-server")
    for path in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if found is None and os.path.exists(path):
            found = path
    return found
