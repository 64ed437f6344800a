"""distro-zmq: the ``zmq`` transport for distro, over ZeroMQ (pyzmq, ``zmq.asyncio``).

Installed, it is found by entry point (group ``distro.transports``); nothing to import::

    import distro_core as distro

    factory = distro.create("zmq")
    server = factory.server(port=0)                  # binds a ROUTER on tcp://127.0.0.1:<free>
    client = factory.client(port=server.address[1])  # connects a DEALER to it

See the README for the options, the socket choice and what happens at the high-water mark.
"""

from __future__ import annotations

from distro_core import transport as kit

from ._transport import ZmqTransport

__all__ = ["ZmqTransport", "__version__", "distro_register_transports"]

__version__ = "0.2.0"


@kit.hookimpl
def distro_register_transports() -> list[type[kit.Transport]]:
    """Register the ``zmq`` transport with distro.

    :returns: ``[ZmqTransport]``.
    """
    return [ZmqTransport]
