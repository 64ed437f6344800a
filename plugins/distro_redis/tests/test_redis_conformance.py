"""The shared behavioural suite (distro_core.testing) over the redis transport, on a real Redis."""

from __future__ import annotations

from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import TransportSuite


class TestRedisConformance(TransportSuite):
    """Servers are given the Redis URL and a per-test channel prefix; everything else is the
    kit's default: a server's address is ``(bus, n)``, so clients made from
    ``server.address`` and RECEIVED headers naming it work as they do over tcp."""

    transport = "redis"

    @pytest.fixture
    def factory(self, options: dict[str, Any]) -> distro.Factory:
        self.options = options
        return distro.create("redis")

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {**self.options, "port": 0}
