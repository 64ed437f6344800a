"""Test configuration: a real NATS, a unique subject prefix per test, bounded async tests.

NATS: the one on 127.0.0.1:4222 when it answers, otherwise a ``nats-server`` this session
starts on a free port. When neither can be had the tests skip, saying how to get one, except
under CI (``CI=true``), where they fail instead of passing silently.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _nats_servers import SHARED_NATS, NatsProcess, answers, free_port, nats_binary, unavailable


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """The URL of a NATS the tests may use (never restarted by them)."""
    if answers(*SHARED_NATS):
        yield "nats://127.0.0.1:4222"
        return
    binary = nats_binary()
    if binary is None:
        unavailable("no NATS answers on 127.0.0.1:4222 and nats-server is not installed")
        return
    server = NatsProcess(binary, free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_nats() -> Iterator[NatsProcess]:
    """A nats-server of this test's own (on a free port), for tests that stop and restart it."""
    binary = nats_binary()
    if binary is None:
        unavailable("nats-server is not installed, and this test must restart its own NATS")
    assert binary is not None
    server = NatsProcess(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A subject prefix unique to this test, so tests never see each other's messages."""
    return f"distro-test.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def options(nats_url: str, prefix: str) -> dict[str, Any]:
    """Server and client options for the test's NATS and prefix."""
    return {"url": nats_url, "prefix": prefix}
