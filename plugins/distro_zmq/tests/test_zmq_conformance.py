"""The conformance kit (distro_core.testing) over the zmq transport, found by entry point."""

from __future__ import annotations

from distro_core.testing import TransportSuite


class TestZmqConformance(TransportSuite):
    transport = "zmq"
