"""Routing: which handlers a message goes to. Pure: it returns handlers, it never calls them.

A route is a verb and a uri pattern. Patterns are matched case-insensitively, segment by segment;
a segment written ``{name}`` matches any one non-empty segment and its text (case kept) lands in
the match's ``params``. Exact uris are found with one dictionary look-up; patterns with parameters
sit in a tree walked one segment at a time, so the cost of a match depends on the uri's length,
not on how many routes exist. Where several patterns match, the most specific wins: at each
segment a literal beats a parameter. A message without a verb is routed as GET.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from ._exceptions import RouteError
from ._message import VERBS
from ._transport import RouteInfo, Segment

__all__ = ["Route", "Router"]

H = TypeVar("H")

_NO_PARAMS: dict[str, str] = {}


class Route(Generic[H]):
    """The handlers registered for one verb and pattern, in registration order."""

    __slots__ = ("handlers", "info", "meta", "param_names", "pattern", "verb")

    def __init__(
        self, verb: str, pattern: str, param_names: tuple[str, ...], parts: Sequence[str] = ()
    ) -> None:
        self.verb = verb
        self.pattern = pattern
        self.param_names = param_names
        names = iter(param_names)
        self.info = RouteInfo(
            verb,
            pattern,
            tuple(Segment(next(names), True) if p == "{}" else Segment(p) for p in parts),
        )
        """What transports see of this route (its parsed segments)."""
        self.handlers: tuple[H, ...] = ()
        self.meta: object = None
        """Free for the router's owner (the server keeps a precomputed dispatch flag here)."""


class _Node(Generic[H]):
    __slots__ = ("literal", "param", "route")

    def __init__(self) -> None:
        self.literal: dict[str, _Node[H]] = {}
        self.param: _Node[H] | None = None
        self.route: Route[H] | None = None


def _segments(pattern: str) -> tuple[list[str], tuple[str, ...]]:
    parts = pattern.split("/")
    names: list[str] = []
    for index, part in enumerate(parts):
        if "{" in part or "}" in part:
            if not (part.startswith("{") and part.endswith("}")) or part.count("{") != 1:
                raise RouteError(f"in route {pattern!r}: a parameter must be a whole segment")
            name = part[1:-1]
            if not name.isidentifier():
                raise RouteError(f"in route {pattern!r}: {name!r} is not a parameter name")
            if name in names:
                raise RouteError(f"in route {pattern!r}: parameter {name!r} appears twice")
            names.append(name)
            parts[index] = "{}"
        else:
            parts[index] = part.lower()
    return parts, tuple(names)


class Router(Generic[H]):
    """Maps (verb, uri) to the route whose handlers should receive a message."""

    __slots__ = ("_memo", "_memo_bytes", "_routes", "_static", "_trees", "catch_all")

    #: How many parameterised uris per verb are remembered after a tree walk.
    MEMO_SIZE = 4096
    #: Roughly how many bytes the remembered matches may hold, all verbs together: the memo is
    #: bounded in memory, not only in count (2,000 distinct 100 KB uris would otherwise hold
    #: hundreds of MiB).
    MEMO_BYTES = 4 * 1024 * 1024
    #: Longer uris are walked every time (the walk costs little next to their parsing).
    MEMO_MAX_URI = 512
    _ENTRY_OVERHEAD = 256  # dict slot, tuple, strings' headers: an estimate on the safe side

    def __init__(self) -> None:
        self._memo: dict[str, dict[str, tuple[Route[H], tuple[tuple[str, str], ...]]]] = {
            verb: {} for verb in VERBS
        }
        self._static: dict[str, dict[str, Route[H]]] = {verb: {} for verb in VERBS}
        self._trees: dict[str, _Node[H]] = {verb: _Node() for verb in VERBS}
        self._memo_bytes = 0
        self._routes: list[Route[H]] = []
        self.catch_all: tuple[H, ...] = ()
        """Handlers that receive every message, in registration order."""

    def add(self, verb: str, pattern: str, handler: H) -> Route[H]:
        """Register ``handler`` for ``verb`` messages whose uri matches ``pattern``.

        :raises RouteError: the pattern is malformed or the verb unknown.
        """
        if not isinstance(verb, str) or not verb.isascii() or verb.upper() not in VERBS:
            raise RouteError(f"unknown verb {verb!r}; expected one of {', '.join(sorted(VERBS))}")
        verb = verb.upper()
        if not isinstance(pattern, str) or not pattern:
            raise RouteError(f"a route pattern is a non-empty string, got {pattern!r}")
        parts, names = _segments(pattern)
        if not names:
            key = pattern.lower()
            route = self._static[verb].get(key)
            if route is None:
                route = self._static[verb][key] = Route(verb, pattern, (), parts)
                self._routes.append(route)
        else:
            node = self._trees[verb]
            for part in parts:
                if part == "{}":
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = node.literal.setdefault(part, _Node())
            if node.route is None:
                node.route = Route(verb, pattern, names, parts)
                self._routes.append(node.route)
            elif node.route.param_names != names:
                raise RouteError(
                    f"route {pattern!r} clashes with {node.route.pattern!r}: "
                    "same shape, different parameter names"
                )
            route = node.route
        route.handlers = (*route.handlers, handler)
        self._forget()
        return route

    def _forget(self) -> None:
        for memo in self._memo.values():
            memo.clear()
        self._memo_bytes = 0

    def add_catch_all(self, handler: H) -> None:
        """Register ``handler`` for every message."""
        self.catch_all = (*self.catch_all, handler)

    @property
    def routes(self) -> Sequence[Route[H]]:
        """Every registered route, in the order first registered."""
        return tuple(self._routes)

    def match(self, verb: str | None, uri: str) -> tuple[Route[H] | None, dict[str, str]]:
        """Find the route for a message.

        :param verb: the message's verb (upper-case) or None, which routes as GET.
        :returns: the route (None when nothing matches) and the path parameters.
        """
        if verb is None:
            verb = "GET"
        static = self._static.get(verb)
        if static is None:
            return None, _NO_PARAMS
        route = static.get(uri.lower())
        if route is not None:
            return route, _NO_PARAMS
        tree = self._trees[verb]
        if tree.literal or tree.param is not None:
            memo = self._memo[verb]
            hit = memo.get(uri)
            if hit is not None:
                return hit[0], dict(hit[1])
            found = _walk(tree, uri.split("/"), 0, [])
            if found is not None:
                route, values = found
                pairs = tuple(zip(route.param_names, values, strict=True))
                if len(uri) <= self.MEMO_MAX_URI:
                    cost = 2 * len(uri) + self._ENTRY_OVERHEAD  # the key, the values, overhead
                    if len(memo) >= self.MEMO_SIZE or self._memo_bytes + cost > self.MEMO_BYTES:
                        self._forget()  # a flood of distinct uris must not grow memory
                    memo[uri] = (route, pairs)
                    self._memo_bytes += cost
                return route, dict(pairs)
        return None, _NO_PARAMS


def _walk(
    node: _Node[H], parts: list[str], index: int, values: list[str]
) -> tuple[Route[H], list[str]] | None:
    if index == len(parts):
        return (node.route, values) if node.route is not None else None
    part = parts[index]
    child = node.literal.get(part.lower())
    if child is not None:
        found = _walk(child, parts, index + 1, values)
        if found is not None:
            return found
    if node.param is not None and part:
        values.append(part)
        found = _walk(node.param, parts, index + 1, values)
        if found is not None:
            return found
        values.pop()
    return None
