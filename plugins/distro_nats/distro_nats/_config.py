"""The options every NATS transport of this distribution reads: which NATS, which subject
namespace, how to connect (TLS, credentials) and the bus identity.

A server is reached through NATS, so its address is ``(bus, n)``: the **bus** names the NATS
server URLs (without credentials) and the subject prefix, ``nats://127.0.0.1:4222#distro``,
and ``n`` is a number the server claimed on that bus (its RECEIVED subject). The code other
transports use, ``factory.client(address=host, port=port)`` with ``server.address``, works as
it is. Options (see the README for examples):

* ``url``: one NATS URL or a list of them (the servers of one cluster; nats-py picks one and
  fails over to the others), ``nats://[user:password@]host[:port]``, ``tls://`` for TLS;
  default ``nats://127.0.0.1:4222``;
* ``address``: the same as a bus (``url1,url2#prefix``) or a bare host name (port 4222): what
  ``server.address[0]`` is; give ``url`` or ``address``, not both;
* ``prefix``: the first token(s) of every message subject; default ``distro``;
* ``port``: for a server, the number it claims on the bus (0: any free one);
* ``connect_timeout``: seconds to connect, and how long a send waits for a lost connection
  to come back before raising :class:`distro.ConnectionError`; default 5;
* ``reconnect_time_wait`` (seconds between attempts on one NATS server, default 0.5) and
  ``max_reconnect_attempts`` (default -1: forever), passed to nats-py;
* ``pending_size``: nats-py's write buffer in bytes (default 2 MiB): a send that fills it
  waits until it is written;
* ``pending_msgs_limit``, ``pending_bytes_limit``: for a server, how many messages (bytes) it
  holds while its handlers are at ``max_concurrency``; past either, messages are dropped and
  counted ``slow_consumer`` (NATS core delivers at most once);
* TLS and credentials, passed to nats-py as they are: ``tls`` (an ``ssl.SSLContext``),
  ``tls_hostname``, ``tls_handshake_first``, ``user``, ``password``, ``token``,
  ``user_credentials`` (a ``.creds`` file), ``nkeys_seed`` (a seed file), ``nkeys_seed_str``;
  and ``name`` (the connection's name in the server's monitoring), ``inbox_prefix`` (where
  replies go; default ``_INBOX``), ``ping_interval`` (seconds, default 120).

Read through the kit's :class:`~distro_core.transport.Options`, so unknown options and bad
values are refused, and worded, as for every transport.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from distro_core.transport import Options

from .subjects import check_prefix

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "NatsConfig", "read_options", "redact"]

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "distro"
_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclasses.dataclass(frozen=True)
class NatsConfig:
    """Validated options.

    :ivar servers: the NATS URLs, as given (credentials included), for nats-py.
    :ivar location: the URLs without credentials, comma-separated, for messages.
    :ivar bus: ``location#prefix``: the identity every server and client on these NATS
        servers and this prefix shares; the host of a server's address and of every sender.
    :ivar prefix: the subject namespace.
    :ivar port: the number a server claims on the bus, or 0 for any.
    :ivar group: the queue group a server joins, or None.
    :ivar connect_timeout: seconds.
    :ivar pending_msgs_limit: messages a paused server holds before dropping.
    :ivar pending_bytes_limit: bytes a paused server holds before dropping.
    :ivar inbox_prefix: the first token(s) of reply subjects.
    :ivar connect_kwargs: the rest, for ``nats.connect`` (TLS, credentials, reconnection).
    """

    servers: tuple[str, ...]
    location: str
    bus: str
    prefix: str
    port: int
    group: str | None
    connect_timeout: float
    pending_msgs_limit: int
    pending_bytes_limit: int
    inbox_prefix: str
    connect_kwargs: Mapping[str, Any]


def read_options(opts: Options) -> NatsConfig:
    """Read the options shared by the NATS transports into a :class:`NatsConfig`; the caller
    reads its own, then calls ``opts.finish()`` (which refuses unknown ones).

    :raises ValueError: a bad value (a URL that is not NATS's, a prefix with wildcards...).
    :raises TypeError: ``tls`` is not an ``ssl.SSLContext``.
    """
    servers, prefix = _where(opts)
    location = ",".join(redact(url) for url in servers)
    port = opts.port("port", 0)
    group = opts.optional_string("group")
    if group is not None and not group:
        raise ValueError("nats option 'group' must be a non-empty string")
    timeout = opts.number("connect_timeout", 5.0, positive=True)
    kwargs: dict[str, Any] = {
        "connect_timeout": timeout,
        "reconnect_time_wait": opts.number("reconnect_time_wait", 0.5, positive=True),
        "max_reconnect_attempts": opts.integer("max_reconnect_attempts", -1, minimum=-1),
        "pending_size": opts.integer("pending_size", 2 * 1024 * 1024, minimum=1024),
        "ping_interval": opts.number("ping_interval", 120.0, positive=True),
    }
    tls = opts.get("tls", None)
    if tls is not None:
        if not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"nats option 'tls' must be an ssl.SSLContext, got {tls!r:.80}")
        kwargs["tls"] = tls
    for name in (
        "tls_hostname",
        "user",
        "password",
        "token",
        "user_credentials",
        "nkeys_seed",
        "nkeys_seed_str",
        "name",
    ):
        value = opts.optional_string(name)
        if value is not None:
            kwargs[name] = value
    if opts.flag("tls_handshake_first", False):
        kwargs["tls_handshake_first"] = True
    inbox = check_prefix_option(opts.string("inbox_prefix", "_INBOX"), "inbox_prefix")
    kwargs["inbox_prefix"] = inbox
    return NatsConfig(
        servers=servers,
        location=location,
        bus=f"{location}#{prefix}",
        prefix=prefix,
        port=port,
        group=group,
        connect_timeout=timeout,
        pending_msgs_limit=opts.integer("pending_msgs_limit", 100_000, minimum=1),
        pending_bytes_limit=opts.integer("pending_bytes_limit", 64 * 1024 * 1024, minimum=1024),
        inbox_prefix=inbox,
        connect_kwargs=kwargs,
    )


def check_prefix_option(value: str, name: str) -> str:
    """``value`` if it is a usable subject prefix, else a ``ValueError`` naming the option."""
    try:
        return check_prefix(value)
    except ValueError as exc:
        raise ValueError(f"nats option {name!r} {exc}") from None


def _where(opts: Options) -> tuple[tuple[str, ...], str]:
    """The NATS URLs and the subject prefix the options name."""
    if "url" in opts and "address" in opts:
        raise ValueError("nats: give url or address (both name the NATS servers), not both")
    url: object = opts.get("url", DEFAULT_URL)  # read both, so an unknown option's error lists both
    address = opts.string("address", DEFAULT_URL)
    in_bus: str | None = None
    if "address" in opts:
        where, has_prefix, after = address.partition("#")
        if has_prefix:
            in_bus = after
        urls = [part.strip() for part in where.split(",")]
        if len(urls) == 1 and "://" not in urls[0]:
            host = urls[0]
            urls = [f"nats://[{host}]:4222" if ":" in host else f"nats://{host}:4222"]
    elif isinstance(url, str):
        urls = [url]
    elif isinstance(url, (list, tuple)) and url and all(isinstance(u, str) for u in url):
        urls = list(url)
    else:
        raise ValueError(f"nats option 'url' must be a URL or a list of URLs, got {url!r:.80}")
    for one in urls:
        _check_url(one)
    prefix = opts.optional_string("prefix")
    if in_bus is not None and prefix is not None and prefix != in_bus:
        raise ValueError(f"nats: prefix {prefix!r} differs from the address's #{in_bus}; give one")
    chosen = in_bus if in_bus is not None else (prefix if prefix is not None else DEFAULT_PREFIX)
    return tuple(urls), check_prefix_option(chosen, "prefix")


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"nats: bad url {redact(url)!r}: {exc}") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(
            f"nats: bad url {redact(url)!r}: want nats://host[:port] "
            f"(or {', '.join(s + '://' for s in _SCHEMES[1:])})"
        )


def redact(url: str) -> str:
    """``url`` without its credentials, for messages and the bus name."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    return f"{scheme}://{rest.partition('@')[2]}"
