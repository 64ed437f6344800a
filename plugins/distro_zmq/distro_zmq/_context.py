"""The ZeroMQ context sockets are made in: the user's, or one per process, made on first use.

A context owns ZeroMQ's I/O thread; one per process is the norm, like one socket table per
machine. It is made lazily (never at import) and made again in a forked child, because a
context does not survive ``fork``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import zmq
import zmq.asyncio

__all__ = ["async_context"]

_lock = threading.Lock()
_shared: tuple[int, zmq.asyncio.Context] | None = None


def async_context(given: Any = None) -> zmq.asyncio.Context:
    """The asyncio context to make sockets in.

    :param given: a ``zmq.Context`` the user passed (plain or asyncio), or None for the
        process-wide one.
    :raises TypeError: ``given`` is not a ``zmq.Context``.
    """
    global _shared
    if given is not None:
        if isinstance(given, zmq.asyncio.Context):
            return given
        if isinstance(given, zmq.Context):
            # A plain context's sockets cannot be awaited; a shadow shares its I/O thread.
            return zmq.asyncio.Context.shadow(given.underlying)
        raise TypeError(f"zmq option context must be a zmq.Context, got {type(given).__name__}")
    pid = os.getpid()
    shared = _shared
    if shared is None or shared[0] != pid:
        with _lock:
            shared = _shared
            if shared is None or shared[0] != pid:
                shared = (pid, zmq.asyncio.Context())
                _shared = shared
    return shared[1]
