"""The shared behavioural suite (distro_core.testing) over the nats transport, on a real NATS."""

from __future__ import annotations

from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import TransportSuite


class TestNatsConformance(TransportSuite):
    """Servers are given the NATS URL and a per-test subject prefix; everything else is the
    kit's default: a server's address is ``(bus, n)``, so clients made from ``server.address``
    and RECEIVED headers naming it work as they do over tcp."""

    transport = "nats"

    @pytest.fixture
    def factory(self, options: dict[str, Any]) -> distro.Factory:
        self.options = options
        return distro.create("nats")

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {**self.options, "port": 0}

    def group_member_options(
        self, factory: distro.Factory, first: distro.Server, group: str
    ) -> dict[str, Any]:
        # Members share the bus; each claims a RECEIVED number of its own.
        return {**self.server_options(factory), "group": group}
