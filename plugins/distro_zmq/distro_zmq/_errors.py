"""Mapping ZeroMQ and OS errors onto distro's exceptions, keeping the cause.

No ``zmq.ZMQError`` or ``OSError`` reaches a user: each is raised again as the most specific
:class:`distro_core.TransportError` subclass, ``from`` the original, with the endpoint named.
"""

from __future__ import annotations

import errno

import zmq

import distro_core as distro

__all__ = ["wrap"]

# Errors that mean the other side cannot be reached (or this side is gone), as opposed to a
# local mistake: the core counts these as a broken link.
_UNREACHABLE = frozenset(
    {
        zmq.EHOSTUNREACH,
        zmq.ETERM,
        zmq.ENOTSOCK,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ENETUNREACH,
        errno.ENOTCONN,
        errno.EPIPE,
    }
)


def wrap(exc: zmq.ZMQError | OSError, what: str) -> distro.TransportError:
    """The distro error for ``exc``, raised while doing ``what`` (which names the endpoint).

    The caller raises it ``from exc``.
    """
    code = exc.errno
    reason = zmq.strerror(code) if code is not None else str(exc)
    text = f"zmq: {what}: {reason}"
    if code == errno.EADDRINUSE:
        return distro.AddressInUse(text)
    if code in _UNREACHABLE:
        return distro.ConnectionError(text)
    return distro.TransportError(text)
