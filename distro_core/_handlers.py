"""Handlers as the server keeps them, and the ``server.post(...)``-style registration methods
(:class:`HandlerTable`, the registration half of :class:`~distro_core.Server`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

from ._message import Message
from ._routing import Router

if TYPE_CHECKING:
    from ._transport import RouteInfo

__all__ = ["F", "BoundVerb", "Entry", "Handler", "HandlerTable", "Verb", "entry"]

Handler = Callable[[Message], Any]
"""A handler takes the message; it may be a plain or an async function. For a request, its
return value (awaited if need be) is the reply's payload."""

F = TypeVar("F", bound=Handler)


@attrs.frozen
class Entry:
    """A registered handler: the function, whether it is async, and a name for logs."""

    fn: Handler
    is_async: bool
    name: str


def entry(fn: Handler) -> Entry:
    """Wrap ``fn`` for registration.

    :raises TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"a handler must be callable, got {type(fn).__name__}")
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return Entry(fn, inspect.iscoroutinefunction(fn), name)


class BoundVerb:
    """``server.post`` and friends: ``server.post(uri, handler)`` or ``@server.post(uri)``."""

    __slots__ = ("_server", "_verb")

    def __init__(self, server: HandlerTable, verb: str) -> None:
        self._server = server
        self._verb = verb

    @overload
    def __call__(self, uri: str) -> Callable[[F], F]: ...
    @overload
    def __call__(self, uri: str, handler: F) -> F: ...

    def __call__(self, uri: str, handler: F | None = None) -> F | Callable[[F], F]:
        if handler is None:
            return self._server.route(self._verb, uri)
        return self._server.route(self._verb, uri, handler)


class Verb:
    """Descriptor that gives each Server a registration method for one verb."""

    def __init__(self, verb: str, doc: str) -> None:
        self.verb = verb
        self.__doc__ = doc

    def __get__(self, server: HandlerTable | None, owner: type[HandlerTable]) -> BoundVerb:
        if server is None:
            return self  # type: ignore[return-value]  # class access, for documentation tools
        return BoundVerb(server, self.verb)


class HandlerTable:
    """Handlers registered by verb and uri pattern, and catch-alls: the registration methods
    of :class:`~distro_core.Server`, which subclasses this and reads the table to dispatch."""

    def __init__(self) -> None:
        self._router: Router[Entry] = Router()
        # Whether a catch-all is ``async def``: then every message takes the async path.
        self._catch_all_async = False

    def receive(self, handler: F) -> F:
        """Register ``handler`` for every message, whatever its uri or verb.

        :returns: the handler, so this works as a decorator.
        """
        registered = entry(handler)
        self._router.add_catch_all(registered)
        self._catch_all_async = self._catch_all_async or registered.is_async
        self._routes_changed()
        return handler

    @overload
    def route(self, verb: str, uri: str) -> Callable[[F], F]: ...
    @overload
    def route(self, verb: str, uri: str, handler: F) -> F: ...

    def route(self, verb: str, uri: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register ``handler`` for messages with this verb whose uri matches ``uri``.

        ``{name}`` segments match one path segment each and land in ``msg.params``; the match
        ignores case. Without ``handler``, returns a decorator.

        :raises RouteError: the pattern or verb is malformed.
        """
        if handler is None:
            return lambda fn: self.route(verb, uri, fn)
        route = self._router.add(verb, uri, entry(handler))
        # Precomputed per route so that dispatch reads one flag to choose the async path.
        route.meta = any(h.is_async for h in route.handlers)
        self._routes_changed()
        return handler

    head = Verb("HEAD", "Register a HEAD handler (see :meth:`route`).")
    get = Verb("GET", "Register a GET handler; messages without a verb come here too.")
    post = Verb("POST", "Register a POST handler (see :meth:`route`).")
    put = Verb("PUT", "Register a PUT handler (see :meth:`route`).")
    delete = Verb("DELETE", "Register a DELETE handler (see :meth:`route`).")
    patch = Verb("PATCH", "Register a PATCH handler (see :meth:`route`).")

    @property
    def routes(self) -> Sequence[RouteInfo]:
        """The verb routes registered so far."""
        return tuple(r.info for r in self._router.routes)

    @property
    def has_catch_all(self) -> bool:
        """Whether any handler was registered with :meth:`receive`."""
        return bool(self._router.catch_all)

    def _routes_changed(self) -> None:
        """Called after each registration (the server tells its listener)."""
