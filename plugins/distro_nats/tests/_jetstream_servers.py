"""A JetStream for the tests: the shared NATS when it has JetStream, else one of the tests' own,
and the fixtures the jetstream tests share (import them into a test module: pytest finds them
there). Every test gets its own prefix, so its own streams, deleted after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from _nats_servers import NatsProcess, free_port, nats_binary, unavailable
from distro_nats._jetstream_config import dead_stream_name, routes_stream_name, stream_name

__all__ = ["JetStreamProcess", "delete_streams", "has_jetstream", "js_options", "js_url"]


class JetStreamProcess(NatsProcess):
    """A ``nats-server -js`` of the tests' own, storing in ``store`` (kept across restarts)."""

    def __init__(self, binary: str, port: int, store: Path) -> None:
        super().__init__(binary, port)
        self.store = store

    def argv(self) -> list[str]:
        """``nats-server`` with JetStream on, storing in :attr:`store`."""
        return [*super().argv(), "-js", "-sd", str(self.store)]


def has_jetstream(url: str) -> bool:
    """Whether the NATS at ``url`` has JetStream enabled."""

    async def ask() -> bool:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jetstream().account_info()
            return True
        except (nats.errors.Error, OSError):
            return False
        finally:
            await nc.close()

    try:
        return asyncio.run(ask())
    except (nats.errors.Error, OSError):
        return False


def delete_streams(url: str, prefix: str) -> None:
    """Delete the streams of ``prefix`` (messages, dead letters, routes) that are there."""

    async def delete() -> None:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            stream = stream_name(prefix)
            for name in (stream, dead_stream_name(stream), routes_stream_name(stream)):
                try:
                    await js.delete_stream(name)
                except nats.js.errors.NotFoundError:
                    pass
        finally:
            await nc.close()

    asyncio.run(delete())


@pytest.fixture(scope="session")
def js_url(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS with JetStream: the tests' NATS if it has it, else a ``nats-server -js`` of the
    session's own."""
    if has_jetstream(nats_url):
        yield nats_url
        return
    binary = nats_binary()
    if binary is None:
        unavailable(f"the NATS at {nats_url} has no JetStream and nats-server is not installed")
        return
    server = JetStreamProcess(binary, free_port(), tmp_path_factory.mktemp("jetstream"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def js_options(js_url: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Options for the test's JetStream and prefix; the prefix's streams are deleted after."""
    try:
        yield {"url": js_url, "prefix": prefix}
    finally:
        delete_streams(js_url, prefix)
