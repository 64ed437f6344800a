"""distro: service-to-service messaging over interchangeable transports.

Quick start::

    import distro_core as distro

    factory = distro.create("udp4")
    server = factory.server(port=0)

    @server.post("/customer/{id}")
    def update(msg):
        ...

A service that owns a server and the clients it calls is a :class:`Service`, served with
``await service.serve("tcp", port=8001)`` or from the command line with ``distro run
app:service --transport tcp --option port=8001`` (:mod:`distro_core.cli`, the ``cli`` extra).

This namespace holds what service authors use: :func:`create`, services, servers, clients,
messages and the exceptions. Transport authors find the contract and its plumbing in
:mod:`distro_core.transport`; the conformance kit is :mod:`distro_core.testing`. The
``_modules`` behind them are private.
"""

from __future__ import annotations

from ._client import Client
from ._exceptions import (
    AddressInUse,
    ConnectionError,
    DistroError,
    DuplicateTransport,
    InvalidPayload,
    MessageError,
    MessageTooLarge,
    PluginError,
    Reject,
    RemoteError,
    RequestTimeout,
    RouteError,
    StateError,
    TransportError,
    TransportNotFound,
)
from ._factory import Factory, create, transports
from ._message import VERBS, Message, message, parse
from ._reply import Reply
from ._server import Handler, Server, ServerStats
from ._service import Hook, Service
from ._stats import ClientStats
from ._sync_client import SyncClient
from ._transports.memory import MemoryNetwork

__version__ = "0.2.0"

__all__ = [
    "AddressInUse",
    "Client",
    "ClientStats",
    "ConnectionError",
    "DistroError",
    "DuplicateTransport",
    "Factory",
    "Handler",
    "Hook",
    "InvalidPayload",
    "MemoryNetwork",
    "Message",
    "MessageError",
    "MessageTooLarge",
    "PluginError",
    "Reject",
    "RemoteError",
    "Reply",
    "RequestTimeout",
    "RouteError",
    "Server",
    "ServerStats",
    "Service",
    "StateError",
    "SyncClient",
    "TransportError",
    "TransportNotFound",
    "VERBS",
    "__version__",
    "create",
    "message",
    "parse",
    "transports",
]
