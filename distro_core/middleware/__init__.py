"""Middleware: code that runs around a server's handling of each message and around a
client's sends and requests (docs/middleware.md).

Subclass :class:`Middleware`, override the hooks you need, and pass instances as
``factory.server(..., middleware=[...])`` or ``factory.client(..., middleware=[...])``, or
register them for every server and client with the ``distro_middleware`` plugin hook.
Bundled middlewares: :class:`Signing` (HMAC-signed messages).
"""

from __future__ import annotations

from .. import hookspecs
from .._middleware import Incoming, Middleware, Outgoing, Refuse
from ._signing import Signing

__all__ = [
    "MIDDLEWARE_ENTRY_POINT_GROUP",
    "Incoming",
    "Middleware",
    "Outgoing",
    "Refuse",
    "Signing",
    "hookimpl",
]

hookimpl = hookspecs.hookimpl
"""Marks a plugin's ``distro_middleware`` implementation."""

MIDDLEWARE_ENTRY_POINT_GROUP = hookspecs.MIDDLEWARE_ENTRY_POINT_GROUP
"""The entry-point group middleware plugins publish themselves in (``distro.middleware``)."""
