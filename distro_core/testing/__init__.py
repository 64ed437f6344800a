"""Testing with distro (requires pytest): the ``distro_test`` fixture and :class:`TestClient`
for testing one's own services (docs/testing.md), and the conformance kit, distro's
behavioural suite, for any transport.

The conformance kit:

Every bundled transport runs it, the plugins run it, and a third-party transport runs it with a
few lines::

    # test_pigeon.py
    from distro_core.testing import TransportSuite

    class TestPigeon(TransportSuite):
        transport = "pigeon"          # a registered name, or the Transport class itself

The suite reads the transport's :class:`~distro_core.Capabilities` and adapts (ordering checks
only for ordered transports, the size limit only where there is one, and so on), so a transport
declares what it cannot do instead of skipping tests by hand. Override :meth:`server_options`
and :meth:`client_options` when a transport needs more than a port.
"""

from __future__ import annotations

from ._helpers import Recorder, wait_until
from ._kit import DistroTest, TestClient
from ._processes import ServerProcess, free_port, unavailable
from ._suite import TransportSuite

__all__ = [
    "DistroTest",
    "Recorder",
    "ServerProcess",
    "TestClient",
    "TransportSuite",
    "free_port",
    "unavailable",
    "wait_until",
]
