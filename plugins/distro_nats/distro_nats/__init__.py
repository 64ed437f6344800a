"""distro-nats: the ``nats`` (core NATS) and ``jetstream`` (NATS JetStream) transports for
distro.

Installed, it is found by entry point (group ``distro.transports``), so no import is needed::

    import distro_core as distro

    factory = distro.create("nats")
    server = factory.server(url="nats://127.0.0.1:4222", prefix="shop")

Messages travel on subjects named after their verb and uri (``shop.POST.customer.7``, see
:mod:`distro_nats.subjects`); every server whose routes match receives a message (fan-out),
and servers made with ``group="name"`` form a NATS queue group (each message to one member).
``distro.create("jetstream")`` stores every message in a JetStream stream per prefix and
delivers it at least once (durable group consumers, redelivery, dead letters read and sent
again with :func:`dead_letters` and :func:`redrive`; :func:`delete_streams` removes a
prefix's streams). See the README for the subjects, the options, request/reply and RECEIVED,
and what happens when NATS restarts.
"""

from __future__ import annotations

from distro_core import transport as kit

from ._jetstream import JetStreamTransport
from ._jetstream_dead import dead_letters, delete_streams, redrive
from ._transport import NatsTransport
from .subjects import message_subject

__all__ = [
    "JetStreamTransport",
    "NatsTransport",
    "dead_letters",
    "delete_streams",
    "distro_register_transports",
    "message_subject",
    "redrive",
]

__version__ = "0.2.0"


@kit.hookimpl
def distro_register_transports() -> list[type[kit.Transport]]:
    """The transports this plugin provides: ``nats`` and ``jetstream``.

    :returns: ``[NatsTransport, JetStreamTransport]``.
    """
    return [NatsTransport, JetStreamTransport]
