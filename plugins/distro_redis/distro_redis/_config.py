"""The redis transport's options: which Redis, which channel namespace, and the bus identity.

Servers and clients take the same options, since both talk to Redis, not to each other:

* ``url``: a redis-py URL, ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for
  TLS (redis-py's ``ssl_*`` query parameters apply) or ``unix:///path?db=N``; default
  ``redis://127.0.0.1:6379/0``.
* ``address``, ``port``, ``db``: the Redis host, port (6379) and database (0), instead of a
  url, as the other transports name their peer.
* ``prefix``: prepended to every channel name, to keep apart several applications (or test
  runs) sharing one Redis; default ``""``.
* ``ack_port``: the number (1..65535) a server claims on the bus for its address, so RECEIVED
  can reach it; default 0, any free one.
* ``connect_timeout``: seconds to connect and authenticate, and the bound on a send that has
  to reconnect first; default 5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url

__all__ = ["DEFAULT_URL", "MAX_BULK", "OPTIONS", "RedisConfig", "parse_options"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
OPTIONS = frozenset({"url", "address", "port", "db", "prefix", "ack_port", "connect_timeout"})

MAX_BULK = 512 * 1024 * 1024
"""Redis's default ``proto-max-bulk-len``: the largest PUBLISH payload it takes."""

# redis-py reads these from a URL for its connection pool, not for one connection.
_POOL_ONLY = ("max_connections", "timeout", "connection_class")


@dataclasses.dataclass(frozen=True)
class RedisConfig:
    """Validated options.

    :ivar connection_class: the redis-py connection class (TCP, TLS or unix socket).
    :ivar connect_kwargs: its keyword arguments (credentials included).
    :ivar location: where Redis is, without credentials, for messages.
    :ivar bus: the identity every server and client on this Redis and prefix shares; it is the
        host of each server's address and of each sender as a server sees it.
    :ivar prefix: the channel namespace.
    :ivar ack_port: the address port a server claims, or 0 for any.
    :ivar connect_timeout: seconds.
    """

    connection_class: type[AbstractConnection]
    connect_kwargs: Mapping[str, Any]
    location: str
    bus: str
    prefix: str
    ack_port: int
    connect_timeout: float


def _port(name: str, value: Any, low: int) -> int:
    if type(value) is not int or not low <= value <= 65535:
        raise ValueError(f"redis transport: {name} must be an integer {low}..65535, got {value!r}")
    return value


def parse_options(options: Mapping[str, Any]) -> RedisConfig:
    """Check the options and resolve them into a :class:`RedisConfig`.

    :raises TypeError: an option of the wrong type, or a URL parameter redis-py does not take.
    :raises ValueError: a bad value (a malformed URL, a port out of range...).
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise TypeError(
            f"transport 'redis' got unknown option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(OPTIONS))}"
        )
    by_parts = {"address", "port", "db"} & set(options)
    url = options.get("url")
    if url is not None and by_parts:
        raise ValueError(
            f"redis transport: give either url or {'/'.join(sorted(by_parts))}, not both"
        )
    if url is None:
        address = options.get("address", "127.0.0.1")
        if not isinstance(address, str) or not address:
            raise ValueError(f"redis transport: address must be a host name, got {address!r}")
        port = _port("port", options.get("port", 6379), 1)
        db = options.get("db", 0)
        if type(db) is not int or db < 0:
            raise ValueError(f"redis transport: db must be an integer >= 0, got {db!r}")
        host = f"[{address}]" if ":" in address else address
        url = f"redis://{host}:{port}/{db}"
    if not isinstance(url, str):
        raise TypeError(f"redis transport: url must be a string, got {type(url).__name__}")
    try:
        parsed: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ValueError(f"redis transport: bad url {_redact(url)!r}: {exc}") from exc
    connection_class: type[AbstractConnection] = parsed.get("connection_class", Connection)
    for key in _POOL_ONLY:
        parsed.pop(key, None)
    prefix = options.get("prefix", "")
    if not isinstance(prefix, str):
        raise TypeError(f"redis transport: prefix must be a string, got {type(prefix).__name__}")
    ack_port = _port("ack_port", options.get("ack_port", 0), 0)
    timeout = options.get("connect_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"redis transport: connect_timeout must be > 0 seconds, got {timeout!r}")
    # The links speak RESP2 themselves once redis-py has connected them; a read time-out only
    # bounds redis-py's handshake.
    parsed["protocol"] = 2
    parsed.setdefault("socket_connect_timeout", float(timeout))
    parsed["socket_timeout"] = float(timeout)
    try:
        connection_class(**parsed)
    except TypeError as exc:
        raise TypeError(
            f"redis transport: url {_redact(url)!r} has a bad parameter: {exc}"
        ) from exc
    scheme = url.split(":", 1)[0]
    db = parsed.get("db", 0)
    if "path" in parsed:
        location = f"unix://{parsed['path']}?db={db}"
    else:
        host = parsed.get("host", "localhost")
        host = f"[{host}]" if ":" in host else host
        location = f"{scheme}://{host}:{parsed.get('port', 6379)}/{db}"
    bus = f"{location}#{prefix}" if prefix else location
    return RedisConfig(
        connection_class=connection_class,
        connect_kwargs=parsed,
        location=location,
        bus=bus,
        prefix=prefix,
        ack_port=ack_port,
        connect_timeout=float(timeout),
    )


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
