"""Handlers as the server keeps them, and the ``server.post(...)``-style registration methods."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs

from ._message import Message

if TYPE_CHECKING:
    from ._server import Server

__all__ = ["F", "BoundVerb", "Entry", "Handler", "Verb", "entry"]

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

    def __init__(self, server: Server, verb: str) -> None:
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

    def __get__(self, server: Server | None, owner: type[Server]) -> BoundVerb:
        if server is None:
            return self  # type: ignore[return-value]  # class access, for documentation tools
        return BoundVerb(server, self.verb)
