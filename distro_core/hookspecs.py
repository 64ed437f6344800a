"""The hook specification: the one contract between distro and its plugins.

A plugin is a module or object with functions marked ``@distro.hookimpl`` whose names match the
specs below. Plugins are found through the entry-point group :data:`ENTRY_POINT_GROUP`, loaded
lazily the first time a transport name is asked for that the core does not provide itself. The
bundled transports (memory, udp4, udp6, tcp) register through this same hook. Middleware
plugins (:func:`distro_middleware`) publish themselves in :data:`MIDDLEWARE_ENTRY_POINT_GROUP`
instead, read when the first server or client is made.

Example (see docs/plugins.md)::

    from distro_core import transport

    class CarrierPigeon(transport.Transport):
        name = "pigeon"
        api_version = 2
        ...

    @transport.hookimpl
    def distro_register_transports():
        return [CarrierPigeon]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._middleware import Middleware
    from ._transport import Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "MIDDLEWARE_ENTRY_POINT_GROUP",
    "PROJECT",
    "distro_middleware",
    "distro_register_transports",
    "hookimpl",
    "hookspec",
]

PROJECT = "distro"
"""The pluggy project name: markers and the plugin manager use it."""

ENTRY_POINT_GROUP = "distro.transports"
"""The ``importlib.metadata`` entry-point group plugins publish themselves in."""

MIDDLEWARE_ENTRY_POINT_GROUP = "distro.middleware"
"""The entry-point group of plugins that add middleware to every server or client
(:func:`distro_middleware`); loaded when the first server or client is made."""

hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks a hook specification (distro's own use)."""

hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin's implementation of a hook: ``@distro_core.transport.hookimpl``."""


@hookspec
def distro_register_transports() -> list[type[Transport]]:  # type: ignore[empty-body]
    """Register transport classes.

    Called once per plugin manager, when transports are first collected. Each class is a
    subclass of :class:`distro_core.transport.Transport` that carries its own ``name`` and the
    ``api_version`` it follows; a name claimed by two plugins is refused with an error naming
    both distributions.

    :returns: the transport classes this plugin provides.
    """


@hookspec
def distro_middleware(side: str, transport: str) -> list[Middleware] | None:
    """Add middleware to every server or client made with :func:`distro_core.create`.

    Called once per server or client, when the factory makes it (never per message): return
    fresh instances (a middleware may keep per-server state). They run before (outside) the
    ones given with ``middleware=``. Plugins implementing it are found through the entry-point
    group :data:`MIDDLEWARE_ENTRY_POINT_GROUP` (docs/plugins.md, "Middleware plugins").

    :param side: ``"server"`` or ``"client"``.
    :param transport: the transport's name (``"tcp"``...).
    :returns: :class:`distro_core.middleware.Middleware` instances, or None for none.
    """
