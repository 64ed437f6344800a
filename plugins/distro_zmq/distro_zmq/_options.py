"""The zmq transport's options and endpoint text. Pure: no zmq, no sockets, no clock.

The kit's :class:`~distro_core.transport.Options` reads and checks each value and refuses
unknown names; what is left here is zmq's own: endpoints, and which options exclude others.

A server binds one endpoint and a client connects to one; both are written as ZeroMQ endpoint
text (``tcp://127.0.0.1:5555``, ``tcp://[::1]:*``, ``ipc:///run/orders.sock``). Users name them
either with ``address`` and ``port`` (tcp) or with a whole ``endpoint`` (tcp or ipc).
"""

from __future__ import annotations

from typing import Any

import attrs

from distro_core.transport import Options

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HWM",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SEND_TIMEOUT",
    "IPC_HOST",
    "MAX_HWM",
    "MAX_LINGER",
    "MAX_MESSAGE_SIZE",
    "Curve",
    "ZmqOptions",
    "address_of",
    "client_endpoint",
    "is_ipv6",
    "needs_ipv6",
    "read_curve",
    "read_options",
    "server_endpoint",
]

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_HWM = 1000
DEFAULT_SEND_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_LINGER = 1.0
MAX_LINGER = 10.0
MAX_HWM = 10_000_000
MAX_MESSAGE_SIZE = 2**31
IPC_HOST = "127.0.0.1"
"""The ``peer.host`` reported for ipc peers: they are processes on this machine."""

_SCHEMES = ("tcp://", "ipc://")

_Z85 = frozenset(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)


@attrs.frozen
class Curve:
    """The CURVE options of one zmq transport instance: keys as given (40 characters of Z85
    text as bytes, or 32 raw bytes); :mod:`._curve` applies them.

    :ivar secret_key: this side's secret key: a server's (which makes it a CURVE server), or
        a client's own (its public key is derived from it); None on a client: a fresh keypair
        per connection.
    :ivar server_key: the server's public key (a client's; makes it a CURVE client).
    :ivar clients: the client public keys a server lets in (Z85 bytes), or None for any
        client that knows the server's public key.
    """

    secret_key: bytes | None = None
    server_key: bytes | None = None
    clients: frozenset[bytes] | None = None


def _key(value: Any) -> bytes:
    """A CURVE key checked: 40 characters of Z85 text (str or bytes) or 32 raw bytes.

    :raises TypeError: not str or bytes.
    :raises ValueError: another length, or not Z85 text.
    """
    if isinstance(value, str):
        if not value.isascii():
            raise ValueError("must be 40 characters of Z85 text (zmq.curve_keypair())")
        value = value.encode("ascii")
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"must be a CURVE key (str or bytes), got {type(value).__name__}")
    key = bytes(value)
    if len(key) == 32:
        return key  # raw
    if len(key) != 40 or not set(key) <= _Z85:
        raise ValueError(
            f"must be a CURVE key: 40 characters of Z85 text or 32 raw bytes, got {len(key)} "
            "bytes" + ("" if len(key) != 40 else " that are not Z85 text")
        )
    return key


def _keys(value: Any) -> frozenset[bytes]:
    if isinstance(value, (str, bytes, bytearray)) or not hasattr(value, "__iter__"):
        raise TypeError(f"must be a collection of client public keys, got {type(value).__name__}")
    keys = frozenset(_key(key) for key in value)
    if not keys:
        raise ValueError("names no client key: nobody could connect (leave it out to allow any)")
    return keys


def read_curve(opts: Options) -> Curve | None:
    """Read ``curve_secret_key``, ``curve_server_key`` and ``curve_clients``; None when none
    is given.

    :raises TypeError: a key that is not str or bytes, ``curve_clients`` not a collection.
    :raises ValueError: a key that is not a CURVE key; ``curve_clients`` without
        ``curve_secret_key`` (only a CURVE server checks clients).
    """
    secret = opts.get("curve_secret_key", None, _key)
    server = opts.get("curve_server_key", None, _key)
    clients = opts.get("curve_clients", None, _keys)
    if clients is not None and secret is None:
        raise ValueError(
            "zmq option 'curve_clients' needs 'curve_secret_key': the server's secret key"
        )
    if secret is None and server is None:
        return None
    return Curve(secret, server, clients)


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
    :ivar connect_timeout: seconds a client's open waits for its link to the server to be up
        (ZeroMQ retrying meanwhile) before it raises ``ConnectionError``.
    :ivar linger: seconds a closed socket keeps trying to deliver what it still holds.
    :ivar context: the ``zmq.Context`` to make sockets in, or None for the process-wide one.
    :ivar curve: CURVE encryption and authentication, or None (plain ZMTP).
    """

    address: str = DEFAULT_ADDRESS
    port: int = 0
    endpoint: str | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    hwm: int = DEFAULT_HWM
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    linger: float = DEFAULT_LINGER
    context: Any = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    curve: Curve | None = None

    @property
    def linger_ms(self) -> int:
        """:attr:`linger` in milliseconds, as ZeroMQ takes it."""
        return round(self.linger * 1000)


def _endpoint(endpoint: Any) -> str:
    """``endpoint`` checked as ZeroMQ endpoint text this transport can use (tcp or ipc).

    :raises ValueError: it is not.
    """
    if not isinstance(endpoint, str) or not endpoint.startswith(_SCHEMES):
        raise ValueError(f"zmq endpoint must be a 'tcp://' or 'ipc://' string, got {endpoint!r}")
    if len(endpoint) <= len("ipc://"):
        raise ValueError(f"zmq endpoint {endpoint!r} names no address")
    return endpoint


def read_options(opts: Options) -> ZmqOptions:
    """Read the zmq options through the kit's reader; the caller then calls ``opts.finish()``,
    which refuses unknown options. The ``context`` is taken as given: its type is checked
    where zmq is imported.

    :raises ValueError: a value out of range, an endpoint that is not tcp or ipc, or
        ``endpoint`` given together with ``address``/``port``.
    """
    endpoint = opts.get("endpoint", None, _endpoint)
    if endpoint is not None:
        clash = [name for name in ("address", "port") if name in opts]
        if clash:
            raise ValueError(
                f"zmq option endpoint={endpoint!r} already names the address; "
                f"drop {' and '.join(clash)}"
            )
    address = opts.string("address", DEFAULT_ADDRESS)
    if address.startswith("tcp://"):
        raise ValueError(f"zmq option 'address' takes a host, not {address!r}; use endpoint=")
    if address.startswith("ipc://"):
        _endpoint(address)
    port = opts.port("port", 0)
    max_size = opts.integer(
        "max_message_size", DEFAULT_MAX_MESSAGE_SIZE, minimum=1, maximum=MAX_MESSAGE_SIZE
    )
    hwm = opts.integer("hwm", DEFAULT_HWM, minimum=1, maximum=MAX_HWM)
    send_timeout = opts.number("send_timeout", DEFAULT_SEND_TIMEOUT, minimum=0)
    linger = opts.number("linger", DEFAULT_LINGER, minimum=0)
    if linger > MAX_LINGER:
        raise ValueError(f"zmq option 'linger' must be 0..{MAX_LINGER:g} seconds, got {linger:g}")
    context = opts.get("context", None)
    connect_timeout = opts.number("connect_timeout", DEFAULT_CONNECT_TIMEOUT, positive=True)
    return ZmqOptions(
        address,
        port,
        endpoint,
        max_size,
        hwm,
        send_timeout,
        linger,
        context,
        connect_timeout,
        read_curve(opts),
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
            return _endpoint(host)
        if type(port) is not int or not 1 <= port <= 65535:
            raise ValueError(f"zmq target port must be an integer 1..65535, got {port!r}")
        return _tcp(host, port)
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
