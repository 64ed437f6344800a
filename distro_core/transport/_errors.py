"""Mapping lower-layer errors onto distro's: one helper every transport uses.

No ``OSError`` or library exception reaches a user: a transport raises the most specific
:class:`~distro_core.TransportError` subclass ``from`` the original, naming what it was doing::

    try:
        await loop.create_connection(...)
    except OSError as exc:
        raise map_error(exc, f"tcp: cannot connect to {where}") from exc

A library adds its own classes with ``table`` (checked first, in order)::

    REDIS_ERRORS = ((redis.ConnectionError, distro.ConnectionError),
                    (redis.TimeoutError, distro.ConnectionError))
    raise map_error(exc, "redis: publishing", table=REDIS_ERRORS) from exc
"""

from __future__ import annotations

import builtins
import errno
from collections.abc import Iterable

from .._exceptions import AddressInUse, ConnectionError, TransportError

__all__ = ["UNREACHABLE_ERRNOS", "ErrorTable", "map_error"]

UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENOTCONN,
        errno.EPIPE,
        errno.ETIMEDOUT,
    }
)
"""``errno`` values that mean the other side cannot be reached or the link broke: mapped to
:class:`~distro_core.ConnectionError`."""

ErrorTable = Iterable[tuple[type[BaseException], type[TransportError]]]
"""Pairs of (library exception class, distro class), tried in order before the defaults."""


def map_error(
    exc: BaseException,
    context: str,
    *,
    table: ErrorTable = (),
    unreachable: Iterable[int] = UNREACHABLE_ERRNOS,
) -> TransportError:
    """The distro error for ``exc``, raised while doing ``context``; raise it ``from exc``.

    In order: a :class:`~distro_core.TransportError` is returned as it is; the first entry of
    ``table`` whose class ``exc`` is an instance of gives the class; ``EADDRINUSE`` gives
    :class:`~distro_core.AddressInUse`; a builtin ``ConnectionError``, ``TimeoutError`` or an
    ``errno`` in ``unreachable`` gives :class:`~distro_core.ConnectionError`; anything else
    :class:`~distro_core.TransportError`.

    :param context: what was being done, naming the transport and the address
        (``"tcp: cannot connect to 127.0.0.1:5000"``); the error's text is
        ``"<context>: <reason>"``.
    :param table: the library's own exception classes and what they become.
    :param unreachable: the ``errno`` values that mean the peer cannot be reached.
    """
    if isinstance(exc, TransportError):
        return exc
    reason = _reason(exc)
    text = f"{context}: {reason}" if context else reason
    for source, target in table:
        if isinstance(exc, source):
            return target(text)
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return AddressInUse(text)
    if isinstance(exc, (builtins.ConnectionError, builtins.TimeoutError)) or code in frozenset(
        unreachable
    ):
        return ConnectionError(text)
    return TransportError(text)


def _reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    if isinstance(exc, OSError) and strerror:
        return str(strerror)
    return str(exc) or type(exc).__name__
