"""``distro.create``: pick a transport, get a factory of servers and clients for it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from . import hookspecs
from ._client import Client
from ._exceptions import PluginError
from ._logging import Logger, check_logger
from ._members import check_servers
from ._middleware import check_middleware
from ._registry import Registry, TransportInfo, check_transport, default_registry
from ._server import Server
from ._sync_client import SyncClient
from ._transport import Transport

__all__ = ["Factory", "create", "transports"]

_SERVER_OPTIONS = (
    "max_concurrency",
    "max_queued",
    "handler_timeout",
    "close_timeout",
    "ack_any_address",
    "confirm_window",
    "confirm_window_bytes",
    "confirm_window_age",
    "expose_errors",
    "middleware",
)
_CLIENT_OPTIONS = ("max_pending", "middleware")


def _merge(info: Mapping[str, Any] | None, options: dict[str, Any]) -> dict[str, Any]:
    if info is None:
        return options
    if not isinstance(info, Mapping):
        raise TypeError(f"server/client info must be a mapping, got {type(info).__name__}")
    clash = sorted(set(info) & set(options))
    if clash:
        raise TypeError(f"option(s) {', '.join(clash)} given both in the mapping and as keywords")
    return {**info, **options}


class Factory:
    """Makes servers and clients that all use one transport; returned by :func:`create`.

    :ivar name: the transport's name.
    :ivar transport: the :class:`Transport` subclass.
    """

    def __init__(
        self, transport: type[Transport], logger: Logger, registry: Registry | None = None
    ) -> None:
        self.transport = transport
        self.name = transport.name
        self.logger = logger
        self._registry = registry

    def _middleware(self, side: str, own: dict[str, Any]) -> None:
        """Put the plugins' middleware (``distro_middleware`` hooks) before the
        ``middleware=`` given, in ``own``: found once per server or client made."""
        given = check_middleware(own.get("middleware"))
        found = (self._registry or default_registry()).middleware(side, self.name)
        if found or given:
            own["middleware"] = (*check_middleware(found), *given)

    def server(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> Server:
        """Make a server (not yet started).

        Options are the transport's (``address``, ``port`` and so on; a mapping works as well as
        keywords) plus the server's own: ``max_concurrency``, ``max_queued``,
        ``handler_timeout``, ``close_timeout``, ``ack_any_address``, the window of confirmed
        sends ``confirm_window``, ``confirm_window_bytes``, ``confirm_window_age``, and
        ``middleware=[...]`` (see :class:`Server` and docs/middleware.md).
        ``group="name"`` makes the server one member of a group that shares its messages (each
        handled by one member), on transports whose capabilities say ``groups``.

        :raises TypeError: an option the transport does not know.
        :raises ValueError: a bad value, or ``group=`` on a transport without groups.
        """
        merged = _merge(info, options)
        own = {key: merged.pop(key) for key in _SERVER_OPTIONS if key in merged}
        self._middleware("server", own)
        if "group" in merged:
            self._check_group(merged["group"])
        return Server(self.transport.from_options(merged), logger=self.logger, **own)

    def _check_group(self, group: object) -> None:
        """``group=`` is the core's name for competing consumers; transports implement it."""
        if not isinstance(group, str) or not group:
            raise ValueError(f"group must be a non-empty string, got {group!r}")
        if not self.transport.capabilities.groups:
            able = sorted(
                name
                for name, info in default_registry().available().items()
                if info.transport.capabilities.groups
            )
            raise ValueError(
                f"transport {self.name!r} has no groups (competing consumers); "
                f"transports that do: {', '.join(able) or 'none installed'}. Over tcp and udp "
                "several servers can share a port with reuse_port=True instead"
            )

    def client(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> Client:
        """Make a client (not yet open) for the server the options name.

        Options are the transport's plus the client's own: ``max_pending``,
        ``middleware=[...]`` (see :class:`Client` and docs/middleware.md) and
        ``servers=[(host, port), ...]``: several servers (replicas of one service) instead of
        ``address``/``port``; messages are spread over them in turn and a server that is down
        is skipped (point-to-point transports only: on a pub/sub bus every server already
        hears every message, and ``group=`` shares them).

        :raises TypeError: an option the transport does not know, or ``servers`` together with
            ``address`` or ``port``.
        :raises ValueError: a bad value.
        """
        return self._make_client(_merge(info, options))

    def _make_client(self, merged: dict[str, Any]) -> Client:
        own = {key: merged.pop(key) for key in _CLIENT_OPTIONS if key in merged}
        self._middleware("client", own)
        if "servers" not in merged:
            return Client(self.transport.from_options(merged), logger=self.logger, **own)
        servers = check_servers(merged.pop("servers"))
        both = sorted({"address", "port"} & set(merged))
        if both:
            raise TypeError(f"servers= names the servers: give it without {' or '.join(both)}")
        if self.transport.capabilities.fan_out:
            raise ValueError(
                f"servers= spreads messages over point-to-point servers; over {self.name!r} "
                "every server on the bus hears each message (servers share them with group=)"
            )
        members = [
            (
                self.transport.from_options({**merged, "address": host, "port": port}),
                f"{host}:{port}",
            )
            for host, port in servers
        ]
        return Client(members[0][0], logger=self.logger, members=members, **own)

    def sync_client(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> SyncClient:
        """Make a blocking client (not yet open) for the server the options name (the same
        options as :meth:`client`)."""
        merged = _merge(info, options)
        self._make_client(dict(merged))  # check the options now, not in the background thread
        return SyncClient(lambda: self._make_client(dict(merged)))

    def __repr__(self) -> str:
        return f"<distro.Factory {self.name!r}>"


def _from_plugin(plugin: object) -> type[Transport]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    try:
        pm.register(plugin)
        pm.check_pending()
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"{plugin!r} is not a usable distro plugin: {exc}") from exc
    classes = [cls for result in pm.hook.distro_register_transports() for cls in result or ()]
    if len(classes) != 1:
        names = ", ".join(getattr(c, "name", repr(c)) for c in classes) or "none"
        raise PluginError(
            f"plugin {plugin!r} provides {len(classes)} transports ({names}); "
            "pass one Transport subclass, or register the plugin and create() by name"
        )
    return check_transport(classes[0], f"plugin {plugin!r}")


def create(
    transport: str | type[Transport] | object,
    logger: Any = None,
    *,
    registry: Registry | None = None,
) -> Factory:
    """Make a factory of servers and clients over one transport.

    :param transport: a transport name (``"memory"``, ``"udp4"``, ``"udp6"``, ``"tcp"``, or one a
        plugin such as ``distro-redis`` provides), a :class:`Transport` subclass, or a plugin
        object whose ``distro_register_transports`` hook gives exactly one transport.
    :param logger: anything with ``log(level, msg, *args)``; the ``distro`` logger by default.
    :param registry: where names are looked up; the process-wide default registry by default.
    :raises TransportNotFound: no transport has that name (the text lists those available).
    :raises DuplicateTransport: two installed distributions claim the name.
    :raises TypeError: ``transport`` is none of the above, or ``logger`` cannot log.
    """
    checked_logger = check_logger(logger)
    if isinstance(transport, str):
        cls = (registry or default_registry()).get(transport).transport
    elif isinstance(transport, type):
        cls = check_transport(transport, "create()")
    elif transport is None:
        raise TypeError("create() needs a transport: a name such as 'udp4', or a Transport class")
    elif hasattr(transport, "distro_register_transports"):
        cls = _from_plugin(transport)
    else:
        raise TypeError(
            "create() takes a transport name, a distro_core.transport.Transport subclass or a "
            "plugin, "
            f"not {type(transport).__name__}"
        )
    return Factory(cls, checked_logger, registry)


def transports(*, registry: Registry | None = None) -> Mapping[str, TransportInfo]:
    """Every transport that can be created, by name, with the distribution providing it."""
    return (registry or default_registry()).available()
