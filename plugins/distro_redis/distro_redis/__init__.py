"""distro-redis: the ``redis`` (pub/sub) and ``redis-streams`` transports for distro.

Installed, it is found by entry point (group ``distro.transports``), so no import is needed::

    import distro_core as distro

    factory = distro.create("redis")
    server = factory.server(url="redis://127.0.0.1:6379/0", prefix="shop:")

Messages travel on channels named after their uri and verb (``/CUSTOMER/7.POST``); every server
whose routes match receives a message (fan-out). See the README for the channel naming, the
request/reply and RECEIVED design, and what happens when Redis restarts.

``distro.create("redis-streams")`` appends messages to a Redis stream instead: servers made with
``group="name"`` share them (each to one member, acknowledged after its handlers finished,
redelivered when they fail, dead-lettered after ``max_deliveries``; :func:`dead_letters` and
:func:`redrive` read and re-send those), messages wait in Redis while no member runs.
"""

from __future__ import annotations

from distro_core import transport as kit

from ._streams import StreamsTransport
from ._streams_dead import dead_letters, redrive
from ._transport import RedisTransport

__all__ = [
    "RedisTransport",
    "StreamsTransport",
    "dead_letters",
    "distro_register_transports",
    "redrive",
]

__version__ = "0.2.0"


@kit.hookimpl
def distro_register_transports() -> list[type[kit.Transport]]:
    """The transports this plugin provides: ``redis`` and ``redis-streams``.

    :returns: ``[RedisTransport, StreamsTransport]``.
    """
    return [RedisTransport, StreamsTransport]
