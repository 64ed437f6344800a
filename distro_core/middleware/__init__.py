"""Middleware: code that runs around a server's handling of each message and around a
client's sends and requests (docs/middleware.md).

Subclass :class:`Middleware`, override the hooks you need, and pass instances as
``factory.server(..., middleware=[...])`` or ``factory.client(..., middleware=[...])``, or
register them for every server and client with the ``distro_middleware`` plugin hook.
Bundled middlewares: :class:`Signing` (HMAC-signed messages); ``Tracing`` (OpenTelemetry, the
``otel`` extra) and ``Metrics`` (Prometheus, the ``prometheus`` extra), imported on first use so
that this package needs neither.
"""

from __future__ import annotations

import typing

from .. import hookspecs
from .._middleware import Incoming, Middleware, Outgoing, Refuse
from ._signing import Signing

if typing.TYPE_CHECKING:
    from ._metrics import Metrics
    from ._tracing import Tracing

__all__ = [
    "Incoming",
    "MIDDLEWARE_ENTRY_POINT_GROUP",
    "Metrics",
    "Middleware",
    "Outgoing",
    "Refuse",
    "Signing",
    "Tracing",
    "hookimpl",
]

hookimpl = hookspecs.hookimpl
"""Marks a plugin's ``distro_middleware`` implementation."""

MIDDLEWARE_ENTRY_POINT_GROUP = hookspecs.MIDDLEWARE_ENTRY_POINT_GROUP
"""The entry-point group middleware plugins publish themselves in (``distro.middleware``)."""


def __getattr__(name: str) -> object:
    # The optional extras are imported when asked for, not with this package.
    if name == "Tracing":
        from ._tracing import Tracing

        globals()["Tracing"] = Tracing
        return Tracing
    if name == "Metrics":
        from ._metrics import Metrics

        globals()["Metrics"] = Metrics
        return Metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
