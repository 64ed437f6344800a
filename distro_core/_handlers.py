"""Handlers as the server keeps them, and the ``server.post(...)``-style registration methods
(:class:`HandlerTable`, the registration half of :class:`~distro_core.Server`)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

from ._routing import Router
from ._typed import typed

if TYPE_CHECKING:
    from ._transport import RouteInfo

__all__ = ["F", "BoundVerb", "Entry", "Handler", "HandlerTable", "Verb", "check_timeout", "entry"]

Handler = Callable[..., Any]
"""A handler takes the message (or its typed payload: see ``_typed``); it may be a plain or an
async function. For a request, its return value (awaited if need be) is the reply's payload
(or a :class:`~distro_core.Reply`)."""

F = TypeVar("F", bound=Handler)


@attrs.frozen
class Entry:
    """A registered handler: the function, whether it is async, a name for logs, and its
    deadline in seconds (None: the server's ``handler_timeout``; ``math.inf``: none)."""

    fn: Handler
    is_async: bool
    name: str
    timeout: float | None = None


def check_timeout(timeout: object, what: str = "timeout") -> float | None:
    """Return ``timeout`` (seconds, or None) checked.

    :raises TypeError: it is not a number.
    :raises ValueError: it is not positive (``math.inf`` means no limit; NaN is refused).
    """
    if timeout is None:
        return None
    if type(timeout) is not int and type(timeout) is not float:
        raise TypeError(f"{what} must be a number of seconds or None, got {timeout!r}")
    if not timeout > 0:  # also refuses NaN
        raise ValueError(f"{what} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def entry(fn: Handler, timeout: float | None = None) -> Entry:
    """Wrap ``fn`` for registration.

    A handler with a typed payload (``def h(order: Order)``, ``def h(msg, order: Order)``)
    or a model return type is registered through a wrapper that converts them, planned here,
    once (``_typed``); any other handler is called as it is, at no extra cost.

    :param timeout: its deadline (see :class:`Entry`), already checked.
    :raises TypeError: ``fn`` is not callable, or its payload annotation is a type no
        converter handles (or one whose extra is not installed).
    """
    if not callable(fn):
        raise TypeError(f"a handler must be callable, got {type(fn).__name__}")
    name = getattr(fn, "__qualname__", None) or repr(fn)
    # An object whose __call__ is ``async def`` is an async handler too: its calls must take
    # a handler slot like any other (the scheduler's shares and queues), not start at once.
    is_async = inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )
    return Entry(typed(fn, is_async) or fn, is_async, name, timeout)


class BoundVerb:
    """``server.post`` and friends: ``server.post(uri, handler)`` or ``@server.post(uri)``,
    either with ``timeout=`` (see :meth:`HandlerTable.route`)."""

    __slots__ = ("_server", "_verb")

    def __init__(self, server: HandlerTable, verb: str) -> None:
        self._server = server
        self._verb = verb

    @overload
    def __call__(self, uri: str, *, timeout: float | None = None) -> Callable[[F], F]: ...
    @overload
    def __call__(self, uri: str, handler: F, *, timeout: float | None = None) -> F: ...

    def __call__(
        self, uri: str, handler: F | None = None, *, timeout: float | None = None
    ) -> F | Callable[[F], F]:
        if handler is None:
            return self._server.route(self._verb, uri, timeout=timeout)
        return self._server.route(self._verb, uri, handler, timeout=timeout)


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
        # Whether some handler has a deadline of its own (then the server bounds awaits).
        self._timed = False

    def receive(self, handler: F, *, timeout: float | None = None) -> F:
        """Register ``handler`` for every message, whatever its uri or verb.

        :param timeout: as for :meth:`route`.
        :returns: the handler, so this works as a decorator.
        """
        registered = self._entry(handler, timeout)
        self._router.add_catch_all(registered)
        self._catch_all_async = self._catch_all_async or registered.is_async
        self._routes_changed()
        return handler

    @overload
    def route(self, verb: str, uri: str, *, timeout: float | None = None) -> Callable[[F], F]: ...
    @overload
    def route(self, verb: str, uri: str, handler: F, *, timeout: float | None = None) -> F: ...

    def route(
        self, verb: str, uri: str, handler: F | None = None, *, timeout: float | None = None
    ) -> F | Callable[[F], F]:
        """Register ``handler`` for messages with this verb whose uri matches ``uri``.

        ``{name}`` segments match one path segment each and land in ``msg.params``; the match
        ignores case. Without ``handler``, returns a decorator.

        :param timeout: the handler's deadline in seconds, instead of the server's
            ``handler_timeout``; ``math.inf`` for none. An async handler (or the awaitable a
            plain one returns) still running at its deadline is cancelled, and a request gets
            an error reply with the code ``handler_timeout``. A plain handler runs inline and
            cannot be interrupted: its own run is not bounded.
        :raises RouteError: the pattern or verb is malformed.
        :raises TypeError, ValueError: ``timeout`` is not a positive number of seconds.
        """
        if handler is None:
            check_timeout(timeout)
            return lambda fn: self.route(verb, uri, fn, timeout=timeout)
        route = self._router.add(verb, uri, self._entry(handler, timeout))
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

    def _entry(self, handler: Handler, timeout: float | None) -> Entry:
        checked = check_timeout(timeout)
        registered = entry(handler, checked)
        if checked is not None and checked < math.inf:
            self._timed = True
        return registered

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
