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

__all__ = ["context_for"]

_lock = threading.Lock()
_shared: tuple[int, zmq.Context[zmq.Socket[bytes]]] | None = None


def context_for(given: Any = None) -> zmq.Context[zmq.Socket[bytes]]:
    """The context to make plain (not ``zmq.asyncio``) sockets in.

    :param given: a ``zmq.Context`` the user passed (plain or ``zmq.asyncio``), or None for
        the process-wide one.
    :raises TypeError: ``given`` is not a ``zmq.Context``.
    """
    global _shared
    if given is not None:
        if type(given) is zmq.Context:
            return given
        if isinstance(given, zmq.Context):
            # An asyncio context makes future-returning sockets; a plain shadow of it shares
            # its I/O thread and makes the plain sockets the transport drives itself.
            return zmq.Context.shadow(given.underlying)
        raise TypeError(f"zmq option context must be a zmq.Context, got {type(given).__name__}")
    pid = os.getpid()
    shared = _shared
    if shared is None or shared[0] != pid:
        with _lock:
            shared = _shared
            if shared is None or shared[0] != pid:
                shared = (pid, zmq.Context())
                _shared = shared
    return shared[1]
