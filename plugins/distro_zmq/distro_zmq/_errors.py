"""Which ZeroMQ errors mean the other side cannot be reached: what the kit's ``map_error`` is
given, so no ``zmq.ZMQError`` or ``OSError`` reaches a user unwrapped::

    raise kit.map_error(exc, f"zmq: binding {endpoint}", unreachable=UNREACHABLE) from exc
"""

from __future__ import annotations

import zmq

from distro_core import transport as kit

__all__ = ["UNREACHABLE"]

UNREACHABLE = kit.UNREACHABLE_ERRNOS | {zmq.EHOSTUNREACH, zmq.ETERM, zmq.ENOTSOCK}
"""The kit's unreachable ``errno`` values, and ZeroMQ's own for a peer that has gone
(``EHOSTUNREACH`` from a ROUTER_MANDATORY socket), a terminated context (``ETERM``) and a
socket closed under the caller (``ENOTSOCK``): the core counts these as a broken link."""
