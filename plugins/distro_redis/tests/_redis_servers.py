"""Getting a real Redis for the tests: the shared one, or a redis-server of the tests' own."""

from __future__ import annotations

import os
import shutil

import redis

from distro_core import testing
from distro_core.testing import free_port as free_port  # the tests import it from here

SHARED_REDIS = ("127.0.0.1", 6379)
HOW_TO_GET_REDIS = (
    "these tests need a Redis: start one on 127.0.0.1:6379 "
    "(apt-get install redis-server && redis-server --daemonize yes --save '' --appendonly no) "
    "or put redis-server on PATH so the tests can start their own"
)


def unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) a test that cannot get the Redis it needs."""
    testing.unavailable(reason, HOW_TO_GET_REDIS)


def answers(host: str, port: int) -> bool:
    """Whether a Redis answers PING at ``host:port``."""
    client = redis.Redis(host=host, port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisProcess(testing.ServerProcess):
    """A ``redis-server`` of the tests' own on 127.0.0.1, keeping nothing on disk."""

    def __init__(self, binary: str, port: int) -> None:
        super().__init__(binary, port)
        self.url = f"redis://127.0.0.1:{port}/0"

    def argv(self) -> list[str]:
        """``redis-server`` on the port, loopback only, no snapshots, no append-only file."""
        port = str(self.port)
        return [
            self.binary,
            "--port",
            port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]

    def answers(self) -> bool:
        """Whether it answers PING."""
        return answers("127.0.0.1", self.port)


def redis_binary() -> str | None:
    """The redis-server to start, if there is one."""
    found = shutil.which("redis-server")
    if found is None and os.path.exists("/usr/bin/redis-server"):
        found = "/usr/bin/redis-server"
    return found
