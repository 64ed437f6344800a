"""distro: service-to-service messaging over interchangeable transports.

Quick start::

    import distro_core as distro

    factory = distro.create("udp4")
    server = factory.server(port=0)

    @server.post("/customer/{id}")
    def update(msg):
        ...

Everything public is re-exported here; the ``_modules`` behind it are private.
"""

from __future__ import annotations

# First: loading the ``transports`` subpackage binds that name on this package, which must not
# clobber the public ``transports()`` function imported below.
from .transports.memory import MemoryNetwork

# isort: split
from ._client import Client, SyncClient
from ._exceptions import (
    AddressInUse,
    ConnectionError,
    DistroError,
    DuplicateTransport,
    MessageError,
    MessageTooLarge,
    PluginError,
    RemoteError,
    RequestTimeout,
    RouteError,
    StateError,
    TransportError,
    TransportNotFound,
)
from ._factory import Factory, create, transports
from ._message import VERBS, Message, message, parse
from ._registry import PluginWarning, Registry, TransportInfo
from ._server import Handler, Server, ServerStats
from ._transport import (
    API_VERSION,
    Capabilities,
    ClientReceiver,
    Connection,
    Listener,
    Peer,
    Receiver,
    RouteInfo,
    Transport,
)
from .hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "API_VERSION",
    "AddressInUse",
    "Capabilities",
    "Client",
    "ClientReceiver",
    "Connection",
    "ConnectionError",
    "DistroError",
    "DuplicateTransport",
    "ENTRY_POINT_GROUP",
    "Factory",
    "Handler",
    "Listener",
    "MemoryNetwork",
    "Message",
    "MessageError",
    "MessageTooLarge",
    "Peer",
    "PluginError",
    "PluginWarning",
    "Receiver",
    "Registry",
    "RemoteError",
    "RequestTimeout",
    "RouteError",
    "RouteInfo",
    "Server",
    "ServerStats",
    "StateError",
    "SyncClient",
    "Transport",
    "TransportError",
    "TransportInfo",
    "TransportNotFound",
    "VERBS",
    "__version__",
    "create",
    "hookimpl",
    "hookspec",
    "message",
    "parse",
    "transports",
]
