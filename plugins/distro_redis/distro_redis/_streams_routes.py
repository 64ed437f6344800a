"""Which stream entries a server takes, and which requests some server can answer. Pure.

Every entry carries its message's channel (``/CUSTOMER/7.POST``, named as the ``redis``
transport names channels, without the prefix). A server takes an entry when the channel matches
one of its route subscriptions, as a pub/sub subscription would (:func:`~._channels.plan`:
literal routes by name, ``{param}`` routes by glob pattern, a catch-all everything). The same
subscriptions are what servers register in the namespace's routes hash, and what a client
checks a request against before sending it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from distro_core.transport import RouteInfo

from ._channels import glob_regex, plan

__all__ = ["RouteFilter", "subscriptions"]

_CACHE_LIMIT = 4096


def subscriptions(routes: Iterable[RouteInfo]) -> frozenset[bytes]:
    """The route subscriptions of ``routes``, as a server registers them in the routes hash:
    ``c:<channel>`` for a route without parameters, ``p:<glob pattern>`` for one with."""
    channels, patterns = plan("", routes, False)
    return frozenset({b"c:" + c for c in channels} | {b"p:" + p for p in patterns})


class RouteFilter:
    """Matches channels against a set of subscriptions, with a bounded cache per channel.

    :param names: ``c:<channel>`` and ``p:<glob pattern>`` names (``p:/CUSTOMER/*.POST``),
        as :func:`subscriptions` makes them; others are ignored.
    :param everything: match every channel (a server with catch-all handlers).
    """

    __slots__ = ("_cache", "_channels", "_patterns", "everything", "names")

    def __init__(self, names: Iterable[bytes] = (), everything: bool = False) -> None:
        self.names = frozenset(names)
        self.everything = everything
        self._channels: set[bytes] = set()
        self._patterns: list[re.Pattern[bytes]] = []
        for name in sorted(self.names):
            if name[:2] == b"c:":
                self._channels.add(name[2:])
            elif name[:2] == b"p:":
                self._patterns.append(glob_regex(name[2:]))
        self._cache: dict[bytes, bool] = {}

    def matches(self, channel: bytes) -> bool:
        """Whether a message on ``channel`` is for these subscriptions."""
        if self.everything:
            return True
        cache = self._cache
        found = cache.get(channel)
        if found is None:
            found = channel in self._channels or any(p.fullmatch(channel) for p in self._patterns)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[channel] = found
        return found
