"""The shared behavioural suite (distro_core.testing) over jetstream, on a real NATS with
JetStream: servers without a group (each an ephemeral consumer of its own), and servers each
alone in a group of its own (a durable consumer, every delivery settled)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from _jetstream_servers import js_options, js_url  # noqa: F401 - fixtures

import distro_core as distro
from distro_core.testing import TransportSuite

_groups = itertools.count()


class TestJetStreamConformance(TransportSuite):
    """Every server of a test reads the test's own stream (its prefix), without a group."""

    transport = "jetstream"

    @pytest.fixture
    def factory(self, js_options: dict[str, Any]) -> distro.Factory:  # noqa: F811
        self.options = js_options
        return distro.create("jetstream")

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {**self.options, "port": 0}

    def group_member_options(
        self, factory: distro.Factory, first: distro.Server, group: str
    ) -> dict[str, Any]:
        # Members share the stream (the prefix); each claims an address number of its own.
        return {**self.options, "port": 0, "group": group}

    def redelivery_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {"redelivery_delay": 0.01}


class TestJetStreamGroupConformance(TestJetStreamConformance):
    """Each server is the one member of a group of its own: every delivery is settled."""

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        return {**self.options, "port": 0, "group": f"g{next(_groups)}"}
