"""Test configuration: a real Redis, a unique channel prefix per test, bounded async tests.

Redis: the one on 127.0.0.1:6379 when it answers, otherwise a ``redis-server`` this session
starts on a free port. When neither can be had the tests skip, saying how to get one, except
under CI (``CI=true``), where they fail instead of passing silently.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _redis_servers import (
    SHARED_REDIS,
    RedisProcess,
    answers,
    free_port,
    redis_binary,
    unavailable,
)


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
