"""The behavioural suite (distro_core.testing) over tcp with TLS: mutual TLS (every client
shows a certificate the server's CA signed), and server-only TLS."""

from __future__ import annotations

from typing import Any

import pytest
from _tls_certs import Certs, make_certs

import distro_core as distro
from distro_core.testing import TransportSuite

MODES = ["mutual", "server-only"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


class TestTcpOverTls(TransportSuite):
    transport = "tcp"

    @pytest.fixture(params=MODES)
    def factory(self, request: pytest.FixtureRequest, certs: Certs) -> distro.Factory:
        self.certs = certs
        self.mode = request.param
        return distro.create("tcp")

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        if self.mode == "mutual":
            # The server's own certificate also serves as its client certificate when it
            # connects to another server to deliver a RECEIVED.
            return {"port": 0, "certfile": self.certs.server, "cafile": self.certs.ca}
        return {
            "port": 0,
            "certfile": self.certs.server,
            "cafile": self.certs.ca,
            "client_cert": "none",
        }

    def client_options(self, factory: distro.Factory, server: distro.Server) -> dict[str, Any]:
        address, port = server.address
        options: dict[str, Any] = {"address": address, "port": port, "cafile": self.certs.ca}
        if self.mode == "mutual":
            options["certfile"] = self.certs.client
        return options
