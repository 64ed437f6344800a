"""The transport registry: pluggy plugins, found through entry points, loaded lazily.

The bundled transports are registered as an internal plugin when a registry is made; entry
points (group ``distro.transports``) are loaded only when a name is asked for that the bundled
ones do not provide, or when every transport is listed. Nothing happens at import time.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import types
import warnings
from collections.abc import Mapping
from typing import Any

import attrs
import pluggy

from . import hookspecs
from ._exceptions import DuplicateTransport, PluginError, TransportNotFound
from ._transport import API_VERSION, Transport

__all__ = ["PluginWarning", "Registry", "TransportInfo", "check_transport", "default_registry"]

CORE_DISTRIBUTION = "distro-core"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; the others still work."""


@attrs.frozen
class TransportInfo:
    """One available transport.

    :ivar name: the name ``create()`` takes.
    :ivar transport: the :class:`Transport` subclass.
    :ivar distribution: the distribution that provides it (``distro-core`` for bundled ones).
    :ivar plugin: the plugin (entry point or registration) name it came from.
    """

    name: str
    transport: type[Transport]
    distribution: str
    plugin: str


def check_transport(obj: Any, origin: str) -> type[Transport]:
    """Check that ``obj`` is a usable transport class.

    :raises PluginError: it is not a concrete Transport subclass with a name, or it was written
        for another version of the transport contract.
    """
    if not (isinstance(obj, type) and issubclass(obj, Transport)):
        raise PluginError(
            f"{origin} gave {obj!r}, which is not a distro_core.transport.Transport subclass"
        )
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{origin}: transport class {obj.__qualname__} has no string 'name'")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise PluginError(f"{origin}: transport {name!r} does not implement {missing}")
    version = getattr(obj, "api_version", None)
    if version is None:
        raise PluginError(
            f"{origin}: transport {name!r} does not say which transport contract it was written "
            f"for; set 'api_version = {API_VERSION}' on the class once it follows version "
            f"{API_VERSION} (see docs/plugins.md, 'Contract version 2')"
        )
    if version != API_VERSION:
        hint = (
            "install a version of the plugin made for this distro-core"
            if version != 1
            else "version 1 transports took options in __init__, built error replies "
            "themselves and read raw route patterns; see docs/plugins.md, "
            "'Contract version 2', for what to change"
        )
        raise PluginError(
            f"{origin}: transport {name!r} was written for transport API version "
            f"{version}, but this distro-core speaks version {API_VERSION}; {hint}"
        )
    return obj


class Registry:
    """The transports one program can create, by name.

    :param entry_points: whether to look for plugins in installed distributions (turn it off
        for tests that register plugins by hand).
    """

    def __init__(self, *, entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._distributions: dict[str, str] = {}
        self._use_entry_points = entry_points
        self._entry_points_loaded = False
        self._middleware_loaded = False
        self._table: dict[str, list[TransportInfo]] | None = None
        # Not ``from . import transports``: that finds the package's transports() function.
        bundled = importlib.import_module("._transports", __package__)

        self.register(bundled, name="distro_core._transports", distribution=CORE_DISTRIBUTION)

    def register(self, plugin: object, *, name: str | None = None, distribution: str = "") -> None:
        """Register a plugin object (a module or object with ``@hookimpl`` functions).

        :raises PluginError: it implements a hook distro does not specify.
        """
        try:
            plugin_name = self._pm.register(plugin, name=name)
        except ValueError as exc:
            raise PluginError(f"cannot register plugin {name or plugin!r}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or plugin!r} is invalid: {exc}") from exc
        assert plugin_name is not None
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(plugin)
            raise PluginError(f"plugin {plugin_name!r} implements an unknown hook: {exc}") from exc
        self._distributions[plugin_name] = distribution or plugin_name
        self._table = None

    def load_entry_points(self) -> None:
        """Load and register every plugin in the ``distro.transports`` entry-point group.

        A plugin that fails to import is skipped with a :class:`PluginWarning` naming it.
        """
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else ep.value
            if self._pm.get_plugin(ep.name) is not None or self._pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name, distribution=dist)
            except Exception as exc:
                warnings.warn(
                    f"distro: transport plugin {ep.name!r} from distribution {dist!r} could not "
                    f"be loaded and is skipped: {type(exc).__name__}: {exc}",
                    PluginWarning,
                    stacklevel=3,
                )

    def middleware(self, side: str, transport: str) -> list[Any]:
        """The middleware plugins add to a new ``side`` (``"server"``, ``"client"``) of
        ``transport``: every ``distro_middleware`` hook's, loading the
        ``distro.middleware`` entry points the first time. A plugin that fails is skipped
        with a :class:`PluginWarning` naming it.
        """
        if self._use_entry_points and not self._middleware_loaded:
            self._middleware_loaded = True
            self._load_group(hookspecs.MIDDLEWARE_ENTRY_POINT_GROUP, "middleware")
        found: list[Any] = []
        for plugin_name, plugin in self._pm.list_name_plugin():
            impl = getattr(plugin, "distro_middleware", None)
            if impl is None:
                continue
            caller = self._pm.subset_hook_caller(
                "distro_middleware", [p for _, p in self._pm.list_name_plugin() if p is not plugin]
            )
            try:
                for result in caller(side=side, transport=transport):
                    found.extend(result or ())
            except Exception as exc:
                warnings.warn(
                    f"distro: middleware plugin {plugin_name!r} failed and is skipped: {exc!r}",
                    PluginWarning,
                    stacklevel=3,
                )
        return found

    def _load_group(self, group: str, what: str) -> None:
        for ep in importlib.metadata.entry_points(group=group):
            dist = ep.dist.name if ep.dist is not None else ep.value
            if self._pm.get_plugin(ep.name) is not None or self._pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name, distribution=dist)
            except Exception as exc:
                warnings.warn(
                    f"distro: {what} plugin {ep.name!r} from distribution {dist!r} could not "
                    f"be loaded and is skipped: {type(exc).__name__}: {exc}",
                    PluginWarning,
                    stacklevel=4,
                )

    def _collect(self) -> dict[str, list[TransportInfo]]:
        if self._table is not None:
            return self._table
        table: dict[str, list[TransportInfo]] = {}
        plugins = dict(self._pm.list_name_plugin())
        for plugin_name in plugins:
            others = [p for n, p in plugins.items() if n != plugin_name]
            caller = self._pm.subset_hook_caller("distro_register_transports", others)
            origin = f"plugin {plugin_name!r} ({self._distributions.get(plugin_name)})"
            try:
                results = caller()
            except Exception as exc:
                warnings.warn(
                    f"distro: {origin} failed to register transports and is skipped: {exc!r}",
                    PluginWarning,
                    stacklevel=4,
                )
                continue
            for classes in results:
                for cls in classes or ():
                    try:
                        cls = check_transport(cls, origin)
                    except PluginError as exc:
                        warnings.warn(f"distro: {exc}; skipped", PluginWarning, stacklevel=4)
                        continue
                    info = TransportInfo(
                        cls.name,
                        cls,
                        self._distributions.get(plugin_name, plugin_name),
                        plugin_name,
                    )
                    claims = table.setdefault(cls.name, [])
                    if all(c.transport is not cls for c in claims):
                        claims.append(info)
        for name, claims in table.items():
            # A bundled name always means the bundled transport, whether or not entry points
            # have been loaded yet, so behaviour never depends on the order of calls.
            bundled = [c for c in claims if c.distribution == CORE_DISTRIBUTION]
            if bundled and len(claims) > len(bundled):
                for other in claims:
                    if other.distribution != CORE_DISTRIBUTION:
                        warnings.warn(
                            f"distro: {other.distribution} ({other.plugin}) registers a transport "
                            f"named {name!r}, which distro-core provides; it is ignored",
                            PluginWarning,
                            stacklevel=4,
                        )
                table[name] = bundled
        self._table = table
        return table

    def get(self, name: str) -> TransportInfo:
        """The transport registered under ``name``.

        :raises TransportNotFound: no such transport (the text lists those available).
        :raises DuplicateTransport: two distributions claim the name.
        """
        table = self._collect()
        if name not in table and self._use_entry_points and not self._entry_points_loaded:
            self.load_entry_points()
            table = self._collect()
        claims = table.get(name)
        if not claims:
            raise TransportNotFound(name, list(table))
        if len(claims) > 1:
            who = " and ".join(f"{c.distribution} ({c.transport.__module__})" for c in claims)
            raise DuplicateTransport(f"transport name {name!r} is claimed by {who}; uninstall one")
        return claims[0]

    def available(self) -> Mapping[str, TransportInfo]:
        """Every transport that can be created, by name (read-only). Loads entry points.

        A name claimed twice is left out with a :class:`PluginWarning`.
        """
        if self._use_entry_points and not self._entry_points_loaded:
            self.load_entry_points()
        result: dict[str, TransportInfo] = {}
        for name, claims in sorted(self._collect().items()):
            if len(claims) == 1:
                result[name] = claims[0]
            else:
                who = " and ".join(c.distribution for c in claims)
                warnings.warn(
                    f"distro: transport name {name!r} is claimed by {who}; neither is usable",
                    PluginWarning,
                    stacklevel=2,
                )
        return types.MappingProxyType(result)


_default: Registry | None = None


def default_registry() -> Registry:
    """The registry ``distro.create`` uses unless given another; made on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default
