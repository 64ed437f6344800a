"""The behavioural suite (distro_core.testing) over the bundled transports, tcp with TLS
included, on uvloop's event loop (the ``uvloop`` extra): the ``distro_loop`` marker of the
kit's pytest plugin. The whole kit runs on uvloop with ``pytest --distro-loop uvloop``."""

from __future__ import annotations

import asyncio

import pytest
from test_conformance import BUNDLED
from test_conformance_tls import TestTcpOverTls as _TcpOverTls
from test_conformance_tls import certs  # noqa: F401 - the fixture _TcpOverTls uses

import distro_core as distro
from distro_core.testing import TransportSuite

pytest.importorskip("uvloop")
pytestmark = pytest.mark.distro_loop("uvloop")


class TestBundledTransportsOnUvloop(TransportSuite):
    @pytest.fixture(params=BUNDLED)
    def factory(self, request: pytest.FixtureRequest) -> distro.Factory:
        self.transport = request.param
        return distro.create(request.param)


class TestTcpOverTlsOnUvloop(_TcpOverTls):
    pass


async def test_the_suite_here_runs_on_uvloop() -> None:
    assert type(asyncio.get_running_loop()).__module__ == "uvloop"
