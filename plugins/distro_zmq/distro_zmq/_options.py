"""The zmq transport's options and endpoint text. Pure: no zmq, no sockets, no clock.

A server binds one endpoint and a client connects to one; both are written as ZeroMQ endpoint
text (``tcp://127.0.0.1:5555``, ``tcp://[::1]:*``, ``ipc:///run/orders.sock``). Users name them
either with ``address`` and ``port`` (tcp) or with a whole ``endpoint`` (tcp or ipc).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_HWM",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SEND_TIMEOUT",
    "IPC_HOST",
    "KNOWN_OPTIONS",
    "MAX_LINGER",
    "ZmqOptions",
    "address_of",
    "client_endpoint",
    "is_ipv6",
    "needs_ipv6",
    "parse_options",
    "server_endpoint",
]

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_HWM = 1000
DEFAULT_SEND_TIMEOUT = 5.0
DEFAULT_LINGER = 1.0
MAX_LINGER = 10.0
IPC_HOST = "127.0.0.1"
"""The ``peer.host`` reported for ipc peers: they are processes on this machine."""

KNOWN_OPTIONS = frozenset(
    {
        "address",
        "port",
        "endpoint",
        "max_message_size",
        "hwm",
        "send_timeout",
        "linger",
        "context",
    }
)

_SCHEMES = ("tcp://", "ipc://")


@attrs.frozen
class ZmqOptions:
    """The checked options of one zmq transport instance.

    :ivar address: the tcp host (server: the interface to bind; client: the server's host), or
        an ``ipc://`` endpoint given as the address.
    :ivar port: the tcp port (0 on a server: an ephemeral one).
    :ivar endpoint: a whole endpoint (``tcp://...`` or ``ipc://...``) overriding address and port.
    :ivar max_message_size: the largest frame, in bytes, a server accepts and a client sends.
    :ivar hwm: the high-water mark (messages) of every socket, both directions.
    :ivar send_timeout: seconds a client send may wait while its queue is at the high-water mark.
    :ivar linger: seconds a closed socket keeps trying to deliver what it still holds.
    :ivar context: the ``zmq.Context`` to make sockets in, or None for the process-wide one.
    """

    address: str = DEFAULT_ADDRESS
    port: int = 0
    endpoint: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    hwm: int = DEFAULT_HWM
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    linger: float = DEFAULT_LINGER
    context: Any = None

    @property
    def linger_ms(self) -> int:
        """:attr:`linger` in milliseconds, as ZeroMQ takes it."""
        return round(self.linger * 1000)


def _number(name: str, value: Any, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"zmq option {name} must be a number, got {value!r}")
    if not (value >= low and (high is None or value <= high)):
        bound = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
        raise ValueError(f"zmq option {name} must be {bound}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"zmq option {name} must be an integer {low}..{high}, got {value!r}")
    return value


def _check_endpoint(endpoint: Any) -> str:
    if not isinstance(endpoint, str) or not endpoint.startswith(_SCHEMES):
        raise ValueError(f"zmq endpoint must be a 'tcp://' or 'ipc://' string, got {endpoint!r}")
    if len(endpoint) <= len("ipc://"):
        raise ValueError(f"zmq endpoint {endpoint!r} names no address")
    return endpoint


def parse_options(options: Mapping[str, Any]) -> ZmqOptions:
    """Check the user's options (unknown names are the caller's concern).

    :raises ValueError: a value out of range, or ``endpoint`` given together with
        ``address``/``port``.
    """
    endpoint = options.get("endpoint")
    if endpoint is not None:
        endpoint = _check_endpoint(endpoint)
        clash = sorted({"address", "port"} & set(options))
        if clash:
            raise ValueError(
                f"zmq option endpoint={endpoint!r} already names the address; "
                f"drop {' and '.join(clash)}"
            )
    address = options.get("address", DEFAULT_ADDRESS)
    if not isinstance(address, str) or not address:
        raise ValueError(f"zmq option address must be a non-empty string, got {address!r}")
    if address.startswith("tcp://"):
        raise ValueError(f"zmq option address takes a host, not {address!r}; use endpoint=")
    if address.startswith("ipc://"):
        _check_endpoint(address)
    port = _integer("port", options.get("port", 0), 0, 65535)
    max_size = _integer(
        "max_message_size", options.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE), 1, 2**31
    )
    hwm = _integer("hwm", options.get("hwm", DEFAULT_HWM), 1, 10_000_000)
    send_timeout = _number(
        "send_timeout", options.get("send_timeout", DEFAULT_SEND_TIMEOUT), 0, None
    )
    linger = _number("linger", options.get("linger", DEFAULT_LINGER), 0, MAX_LINGER)
    return ZmqOptions(
        address, port, endpoint, max_size, hwm, send_timeout, linger, options.get("context")
    )


def is_ipv6(host: str) -> bool:
    """Whether ``host`` is an IPv6 literal (it then needs brackets in an endpoint)."""
    return ":" in host


def needs_ipv6(endpoint: str) -> bool:
    """Whether a socket for ``endpoint`` needs ZeroMQ's IPV6 option: a bracketed IPv6 host.

    IPv4 endpoints keep it off, so their addresses are reported as plain IPv4, not v4-mapped.
    """
    return endpoint.startswith("tcp://[")


def _tcp(host: str, port: int | str) -> str:
    if is_ipv6(host) and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def server_endpoint(opts: ZmqOptions) -> str:
    """The endpoint a server binds: ``tcp://host:*`` for port 0 (ZeroMQ picks a free port)."""
    if opts.endpoint is not None:
        return opts.endpoint
    if opts.address.startswith("ipc://"):
        return opts.address
    return _tcp(opts.address, opts.port or "*")


def client_endpoint(opts: ZmqOptions, target: tuple[str, int] | None = None) -> str:
    """The endpoint a client connects to: ``target`` when given, else its options.

    :raises ValueError: no server is named (a tcp port of 0, or an unusable target).
    """
    if target is not None:
        host, port = target
        if not isinstance(host, str) or not host:
            raise ValueError(f"zmq target address must be a non-empty string, got {host!r}")
        if host.startswith(_SCHEMES):
            return _check_endpoint(host)
        return _tcp(host, _integer("target port", port, 1, 65535))
    if opts.endpoint is not None:
        return opts.endpoint
    if opts.address.startswith("ipc://"):
        return opts.address
    if opts.port == 0 or opts.address == "*":
        raise ValueError(
            "a zmq client needs the server's address and port (or endpoint=), "
            f"got address={opts.address!r} port={opts.port}"
        )
    return _tcp(opts.address, opts.port)


def address_of(endpoint: str) -> tuple[str, int]:
    """What a listener bound at ``endpoint`` reports as its address.

    ``tcp://127.0.0.1:5555`` gives ``("127.0.0.1", 5555)`` and ``tcp://[::1]:5555`` gives
    ``("::1", 5555)``; an ipc endpoint has no port and gives ``(endpoint, 0)``, which a client
    takes back as ``address=endpoint, port=0``.

    :raises ValueError: ``endpoint`` is not tcp or ipc endpoint text.
    """
    if endpoint.startswith("ipc://"):
        return endpoint, 0
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"not a tcp or ipc endpoint: {endpoint!r}")
    host, sep, port = endpoint[len("tcp://") :].rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"tcp endpoint without a port: {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
