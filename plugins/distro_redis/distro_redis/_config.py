"""The redis transport's options: which Redis, which channel namespace, and the bus identity.

A redis server is reached through Redis, so its address is ``(bus, n)``: the **bus** is the
Redis location (a URL without credentials) plus ``#prefix`` when there is a prefix, and ``n``
a number the server claimed on that bus. The options mirror that, so the code other transports
use, ``factory.client(address=host, port=port)`` with ``server.address``, works as it is:

* ``address`` or ``url`` (one of them): where Redis is and, after ``#``, the channel prefix.
  A redis-py URL, ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS
  (redis-py's ``ssl_*`` query parameters apply) or ``unix:///path?db=N``; ``address`` may also
  be a bare host name (port 6379, db 0). Default ``redis://127.0.0.1:6379/0``.
* ``prefix``: prepended to every channel name, to keep apart applications (or test runs)
  sharing one Redis; default ``""`` (or what follows ``#``).
* ``port``: for a server, the number it claims on the bus (0, the default: any free one);
  a client takes it for symmetry with the other transports and needs none (pub/sub reaches
  every server that subscribes).
* ``connect_timeout``: seconds to connect and authenticate, and the bound on a send that has
  to reconnect first; default 5.

They are read through the kit's :class:`~distro_core.transport.Options` (so unknown options,
ports, numbers and strings are checked, and worded, as for every transport); what is Redis's
own, the URL, the prefix after ``#`` and the bus they name, is worked out here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from redis.asyncio.connection import AbstractConnection, Connection, parse_url

from distro_core.transport import Options

__all__ = ["DEFAULT_URL", "MAX_BULK", "RedisConfig", "read_options"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

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
    :ivar port: the number a server claims on the bus, or 0 for any.
    :ivar connect_timeout: seconds.
    """

    connection_class: type[AbstractConnection]
    connect_kwargs: Mapping[str, Any]
    location: str
    bus: str
    prefix: str
    port: int
    connect_timeout: float


def read_options(opts: Options) -> RedisConfig:
    """Read the options into a :class:`RedisConfig`; the caller then calls ``opts.finish()``,
    which refuses unknown options.

    :raises TypeError: a URL parameter redis-py does not take.
    :raises ValueError: a bad value (a malformed URL, a port out of range, a prefix that is
        not a string...).
    """
    url, prefix = _where(opts)
    try:
        parsed: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ValueError(f"redis transport: bad url {_redact(url)!r}: {exc}") from exc
    connection_class: type[AbstractConnection] = parsed.get("connection_class", Connection)
    for key in _POOL_ONLY:
        parsed.pop(key, None)
    port = opts.port("port", 0)
    timeout = opts.number("connect_timeout", 5.0, positive=True)
    # The links speak RESP2 themselves once redis-py has connected them; a read time-out only
    # bounds redis-py's handshake.
    parsed["protocol"] = 2
    parsed.setdefault("socket_connect_timeout", timeout)
    parsed["socket_timeout"] = timeout
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
        port=port,
        connect_timeout=timeout,
    )


def _where(opts: Options) -> tuple[str, str]:
    """The Redis URL (without ``#prefix``) and the channel prefix the options name."""
    if "url" in opts and "address" in opts:
        raise ValueError("redis transport: give url or address (both name the Redis), not both")
    # Both are read, so that an unknown option's error lists them both.
    url = opts.string("url", DEFAULT_URL)
    address = opts.string("address", DEFAULT_URL)
    name, where = ("address", address) if "address" in opts else ("url", url)
    if name == "address" and "://" not in where:
        if where.count(":") == 1:
            raise ValueError(
                f"redis transport: address {where!r} is neither a host name nor a Redis URL; "
                "give redis://host:port/db for a Redis on another port"
            )
        where = f"redis://[{where}]:6379/0" if ":" in where else f"redis://{where}:6379/0"
    url, has_prefix, in_url = where.partition("#")
    prefix = opts.optional_string("prefix")
    if has_prefix and prefix is not None and prefix != in_url:
        raise ValueError(
            f"redis transport: prefix {prefix!r} differs from the {name}'s #{in_url}; give one"
        )
    return url, in_url if has_prefix else (prefix or "")


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"
