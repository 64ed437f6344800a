"""The shared behavioural suite (distro_core.testing) over the redis transport, on a real Redis."""

from __future__ import annotations

from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import TransportSuite


class TestRedisConformance(TransportSuite):
    """Servers and clients both name the Redis and a per-test channel prefix; a server's
    address is ``(bus, n)``, so the kit's default RECEIVED headers reach it as they are."""

    transport = "redis"

    @pytest.fixture
    def factory(self, options: dict[str, Any]) -> distro.Factory:
        self.options = options
        return distro.create("redis")

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return dict(self.options)

    def client_options(self, factory: distro.Factory, server: distro.Server) -> dict[str, Any]:
        return dict(self.options)
