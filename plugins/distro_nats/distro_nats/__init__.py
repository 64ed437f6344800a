"""distro-nats: the ``nats`` transport (core NATS) for distro.

Installed, it is found by entry point (group ``distro.transports``), so no import is needed::

    import distro_core as distro

    factory = distro.create("nats")
    server = factory.server(url="nats://127.0.0.1:4222", prefix="shop")

Messages travel on subjects named after their verb and uri (``shop.POST.customer.7``, see
:mod:`distro_nats.subjects`); every server whose routes match receives a message (fan-out),
and servers made with ``group="name"`` form a NATS queue group (each message to one member).
See the README for the subjects, the options, request/reply and RECEIVED, and what happens
when NATS restarts.
"""

from __future__ import annotations

from distro_core import transport as kit

from ._transport import NatsTransport
from .subjects import message_subject

__all__ = ["NatsTransport", "distro_register_transports", "message_subject"]

__version__ = "0.2.0"


@kit.hookimpl
def distro_register_transports() -> list[type[kit.Transport]]:
    """The transports this plugin provides: ``nats``.

    :returns: ``[NatsTransport]``.
    """
    return [NatsTransport]
