"""distro-pigeon: an example third-party transport for distro, over Unix-domain sockets.

Installing the distribution is all it takes: its ``distro.transports`` entry point names this
module, whose hook gives distro the transport class, so ``distro.create("pigeon")`` works with
no import of ``distro_pigeon`` by the user.
"""

from __future__ import annotations

from distro_core import transport as kit

from ._transport import MAX_MESSAGE_SIZE, PigeonTransport, default_roost

__all__ = ["MAX_MESSAGE_SIZE", "PigeonTransport", "default_roost", "distro_register_transports"]


@kit.hookimpl
def distro_register_transports() -> list[type[kit.Transport]]:
    """Give distro the pigeon transport."""
    return [PigeonTransport]
