"""The kit for transport authors: the contract a transport implements, and the plumbing every
transport needs, written once.

Service authors never import this; ``distro_core`` has what they use. A transport author
imports it instead of reaching into private modules::

    from distro_core import transport as kit

    class Pigeon(kit.Transport):
        name = "pigeon"
        api_version = kit.API_VERSION
        capabilities = kit.Capabilities(ordered=False)

        @classmethod
        def from_options(cls, options):
            opts = kit.Options(cls.name, options)
            ...

What is here:

* the contract (version :data:`API_VERSION`): :class:`Transport`, :class:`Listener`,
  :class:`Connection`, :class:`Peer`, what the core gives them (:class:`Receiver`,
  :class:`ClientReceiver`), and the values they exchange (:class:`Capabilities`,
  :class:`RouteInfo` and its :class:`Segment`, :class:`Outcome`, :class:`RequestFailure`);
* :class:`Options`: reads and checks the user's options, refuses unknown ones;
* :func:`map_error`: one mapping from ``OSError`` and library exceptions to distro's;
* :class:`FrameInlet`: hands frames to the core, holding them while it has paused reading;
* :class:`WriteBatcher`: writes a loop iteration's frames together, with back-pressure;
* discovery: :data:`hookimpl` to mark the ``distro_register_transports`` hook,
  :data:`ENTRY_POINT_GROUP`, and :class:`Registry` for registering plugins by hand in tests.

docs/plugins.md walks through writing a transport with it; ``distro_core.testing`` is the
conformance kit that checks one.
"""

from __future__ import annotations

from .._registry import PluginWarning, Registry, TransportInfo
from .._transport import (
    API_VERSION,
    Capabilities,
    ClientReceiver,
    Connection,
    DeadLetter,
    Listener,
    Outcome,
    Peer,
    Receiver,
    RequestFailure,
    RouteInfo,
    Segment,
    Transport,
)
from ..hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from ._batcher import FLUSH_AT, WriteBatcher
from ._bus import BusPeer
from ._errors import UNREACHABLE_ERRNOS, ErrorTable, map_error
from ._inlet import FrameInlet
from ._options import Options

__all__ = [
    "API_VERSION",
    "BusPeer",
    "Capabilities",
    "ClientReceiver",
    "Connection",
    "DeadLetter",
    "ENTRY_POINT_GROUP",
    "ErrorTable",
    "FLUSH_AT",
    "FrameInlet",
    "Listener",
    "Options",
    "Outcome",
    "Peer",
    "PluginWarning",
    "Receiver",
    "Registry",
    "RequestFailure",
    "RouteInfo",
    "Segment",
    "Transport",
    "TransportInfo",
    "UNREACHABLE_ERRNOS",
    "WriteBatcher",
    "hookimpl",
    "hookspec",
    "map_error",
]
