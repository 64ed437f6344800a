"""Getting a real Redis for the tests: the shared one, or a redis-server of the tests' own."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import redis

SHARED_REDIS = ("127.0.0.1", 6379)
HOW_TO_GET_REDIS = (
    "these tests need a Redis: start one on 127.0.0.1:6379 "
    "(apt-get install redis-server && redis-server --daemonize yes --save '' --appendonly no) "
    "or put redis-server on PATH so the tests can start their own"
)


def unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) a test that cannot get the Redis it needs."""
    message = f"{reason}; {HOW_TO_GET_REDIS}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def answers(host: str, port: int) -> bool:
    """Whether a Redis answers PING at ``host:port``."""
    client = redis.Redis(host=host, port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A ``redis-server`` of the tests' own on 127.0.0.1, keeping nothing on disk."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait (bounded) until it answers."""
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not answers("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not come up")
            time.sleep(0.02)

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections stay open, nothing is read or answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen process go on (SIGCONT)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def redis_binary() -> str | None:
    """The redis-server to start, if there is one."""
    found = shutil.which("redis-server")
    if found is None and os.path.exists("/usr/bin/redis-server"):
        found = "/usr/bin/redis-server"
    return found
