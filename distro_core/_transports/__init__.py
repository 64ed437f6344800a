"""The transports bundled with distro-core, registered as an internal plugin through the same
hook third-party transports use."""

from __future__ import annotations

from .._transport import Transport
from ..hookspecs import hookimpl
from .memory import MemoryNetwork, MemoryTransport
from .tcp import TcpTransport
from .udp import UDP4Transport, UDP6Transport

__all__ = [
    "MemoryNetwork",
    "MemoryTransport",
    "TcpTransport",
    "UDP4Transport",
    "UDP6Transport",
    "distro_register_transports",
]


@hookimpl
def distro_register_transports() -> list[type[Transport]]:
    """The bundled transports."""
    return [MemoryTransport, TcpTransport, UDP4Transport, UDP6Transport]
