"""Test configuration: a real Redis, a unique channel prefix per test, bounded async tests.

Redis: the one on 127.0.0.1:6379 when it answers, otherwise a ``redis-server`` this session
starts on a free port. When neither can be had the tests skip, saying how to get one, except
under CI (``CI=true``), where they fail instead of passing silently.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

ASYNC_TEST_TIMEOUT = 30.0
SHARED_REDIS = ("127.0.0.1", 6379)
HOW_TO_GET_REDIS = (
    "these tests need a Redis: start one on 127.0.0.1:6379 "
    "(apt-get install redis-server && redis-server --daemonize yes --save '' --appendonly no) "
    "or put redis-server on PATH so the tests can start their own"
)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with asyncio.run, bounded so a hang fails instead of stalling."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if pyfuncitem.get_closest_marker("distro_async"):
        return None  # the conformance kit's plugin runs these
    funcargs = pyfuncitem.funcargs
    kwargs: dict[str, Any] = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def bounded() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT)

    asyncio.run(bounded())
    return True


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

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis the tests may use (never flushed or restarted by them)."""
    if answers(*SHARED_REDIS):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = redis_binary()
    if binary is None:
        unavailable("no Redis answers on 127.0.0.1:6379 and redis-server is not installed")
        return
    server = RedisProcess(binary, free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own (on a free port), for tests that stop and restart it."""
    binary = redis_binary()
    if binary is None:
        unavailable("redis-server is not installed, and this test must restart its own Redis")
    assert binary is not None
    server = RedisProcess(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """A channel prefix unique to this test run."""
    return f"distro-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def prefix(run_prefix: str) -> str:
    """A channel prefix unique to this test, so tests never see each other's messages."""
    return f"{run_prefix}{uuid.uuid4().hex[:6]}:"


@pytest.fixture
def options(redis_url: str, prefix: str) -> dict[str, Any]:
    """Server and client options for the test's Redis and prefix."""
    return {"url": redis_url, "prefix": prefix}
