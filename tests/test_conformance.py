"""The behavioural suite (distro_core.testing) over every bundled transport."""

from __future__ import annotations

import pytest

import distro_core as distro
from distro_core.testing import TransportSuite

BUNDLED = ["memory", "tcp", "udp4", "udp6"]


class TestBundledTransports(TransportSuite):
    @pytest.fixture(params=BUNDLED)
    def factory(self, request: pytest.FixtureRequest) -> distro.Factory:
        self.transport = request.param
        return distro.create(request.param)
