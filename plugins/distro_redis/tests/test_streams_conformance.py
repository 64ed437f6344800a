"""The shared behavioural suite (distro_core.testing) over redis-streams, on a real Redis:
servers without a group (each reads the stream with XREAD), and servers each alone in a group
of its own (XREADGROUP, settled deliveries, XACK)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import TransportSuite

_groups = itertools.count()


class TestStreamsConformance(TransportSuite):
    """Every server of a test reads the test's own stream (its prefix) without a group."""

    transport = "redis-streams"

    @pytest.fixture
    def factory(self, options: dict[str, Any]) -> distro.Factory:
        self.options = options
        return distro.create("redis-streams")

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {**self.options, "port": 0}

    def group_member_options(
        self, factory: distro.Factory, first: distro.Server, group: str
    ) -> dict[str, Any]:
        # Members share the stream (the prefix); each claims an address number of its own.
        return {**self.options, "port": 0, "group": group}


class TestStreamsGroupConformance(TestStreamsConformance):
    """Each server is the one member of a group of its own: every delivery is settled."""

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {**self.options, "port": 0, "group": f"g{next(_groups)}"}
