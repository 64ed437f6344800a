"""Channel names and subscription plans. Pure: no I/O, no clock.

Naming (the JavaScript distro-redis plug-in's, under an optional ``prefix``):

* a message is published on ``<prefix><URI upper-cased>.<VERB>``, GET when it has no verb:
  ``/CUSTOMER/7.POST``;
* a server subscribes to ``<prefix><PATTERN upper-cased>.<VERB>`` for each route without
  parameters, and pattern-subscribes (PSUBSCRIBE) to the same with every ``{param}`` segment
  written ``*`` (and glob characters in the rest escaped) for each route with parameters;
  both are built from the route's segments as the core parsed them
  (:attr:`distro_core.transport.RouteInfo.segments`);
* a server with catch-all handlers pattern-subscribes to ``<prefix>*.<VERB>`` for each verb
  instead, so it sees every message once and clients publish each message once;
* with the client option ``publish_receive``, a message is also published on
  ``<prefix>RECEIVE``, the channel the JavaScript original publishes every message on and its
  servers' ``receive()`` handlers subscribe to; it ends in no verb, so no distro server
  subscribes to it and a message published on both is handled once;
* control channels end in no verb, so no message pattern ever matches them:
  ``<prefix>distro.reply.<hex>`` (a client's replies), ``<prefix>distro.ack.<n>`` (RECEIVED
  for the server whose address port is ``n``).

The core routes case-insensitively by lower-casing, and hands a route's literal segments
lower-cased; a uri is therefore upper-cased from its lower-case form, so that a message and
every route the core would match it to name one channel. That is ``uri.upper()`` except for
six code points whose lower case upper-cases to another character (the Kelvin sign, the ohm
sign, ``İ``...).

Several subscriptions of one server can match one channel (``/a/{x}`` and ``/a/b``; a catch-all
added next to routes). Redis then delivers the message once per subscription;
:class:`Subscriptions` tracks what Redis has confirmed, in stream order, and names one owner per
channel so the server takes each message exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from distro_core import VERBS
from distro_core.transport import RouteInfo

__all__ = [
    "ACK_MARK",
    "RECEIVE",
    "REPLY_MARK",
    "Subscriptions",
    "ack_channel",
    "catch_all_patterns",
    "glob_escape",
    "glob_regex",
    "message_channel",
    "plan",
    "receive_channel",
    "reply_channel",
    "route_subscription",
]

REPLY_MARK = "distro.reply."
ACK_MARK = "distro.ack."
RECEIVE = "RECEIVE"
"""The JavaScript original's catch-all channel: its clients publish every message there too,
and its servers' ``receive()`` handlers subscribe to it."""

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def glob_escape(text: str) -> str:
    """Escape the characters Redis glob patterns treat specially (``\\ * ? [ ]``)."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def message_channel(prefix: str, uri: str, verb: str | None) -> bytes:
    """The channel a message with this uri and verb is published on."""
    return f"{prefix}{uri.lower().upper()}.{verb or 'GET'}".encode()


def receive_channel(prefix: str) -> bytes:
    """The channel the JavaScript original's ``receive()`` handlers listen on (``RECEIVE``,
    under the prefix)."""
    return f"{prefix}{RECEIVE}".encode()


def reply_channel(prefix: str, token: str) -> str:
    """The channel a client with this unique token takes its replies on."""
    return f"{prefix}{REPLY_MARK}{token}"


def ack_channel(prefix: str, port: int) -> bytes:
    """The channel a server whose address port is ``port`` takes RECEIVED on."""
    return f"{prefix}{ACK_MARK}{port}".encode()


def route_subscription(prefix: str, route: RouteInfo) -> tuple[bool, bytes]:
    """What a server subscribes to for one route: ``(is_pattern, channel or pattern)``."""
    segments = route.segments
    if not route.has_params:
        uri = "/".join(s.text for s in segments)
        return False, f"{prefix}{uri.upper()}.{route.verb}".encode()
    glob = "/".join("*" if s.param else glob_escape(s.text.upper()) for s in segments)
    return True, f"{glob_escape(prefix)}{glob}.{route.verb}".encode()


def catch_all_patterns(prefix: str) -> frozenset[bytes]:
    """The patterns of a server with catch-all handlers: every message channel, once."""
    escaped = glob_escape(prefix)
    return frozenset(f"{escaped}*.{verb}".encode() for verb in VERBS)


def plan(
    prefix: str, routes: Iterable[RouteInfo], catch_all: bool
) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """The message subscriptions a server wants: ``(channels, patterns)``.

    A catch-all makes route subscriptions redundant, so it replaces them.
    """
    if catch_all:
        return frozenset(), catch_all_patterns(prefix)
    channels: set[bytes] = set()
    patterns: set[bytes] = set()
    for route in routes:
        is_pattern, name = route_subscription(prefix, route)
        (patterns if is_pattern else channels).add(name)
    return frozenset(channels), frozenset(patterns)


def glob_regex(pattern: bytes) -> re.Pattern[bytes]:
    """A regular expression matching what the Redis glob ``pattern`` matches.

    Enough for the patterns :func:`plan` makes (``*``, ``?`` and backslash escapes); a
    bracket class is copied through as a regex class.
    """
    out = bytearray()
    index = 0
    while index < len(pattern):
        char = pattern[index : index + 1]
        if char == b"\\" and index + 1 < len(pattern):
            out += re.escape(pattern[index + 1 : index + 2])
            index += 2
            continue
        if char == b"*":
            out += b".*"
        elif char == b"?":
            out += b"."
        elif char == b"[":
            close = pattern.find(b"]", index + 1)
            if close < 0:
                out += re.escape(char)
            else:
                body = pattern[index + 1 : close]
                negated = body.startswith(b"^")
                body = re.escape(body[1:] if negated else body)
                if negated:
                    body = b"^" + body
                out += b"[" + body.replace(b"\\-", b"-") + b"]"
                index = close
        else:
            out += re.escape(char)
        index += 1
    return re.compile(bytes(out), re.DOTALL)


def _suffix(name: bytes) -> bytes:
    return name[name.rfind(b".") + 1 :]


class Subscriptions:
    """What Redis has confirmed on one subscriber link, and which subscription owns a channel.

    Confirmations arrive in the same stream as messages, so at every message this is exactly
    the set that was active when Redis sent it. A message that came through an exact channel
    subscription is always taken (channels are unique). One that came through a pattern is
    taken only from its owner: none when the channel itself is subscribed, otherwise the first
    matching pattern in byte order. Checks are skipped when no two subscriptions can match
    one channel (no verb has a pattern beside another subscription), the common case.
    """

    __slots__ = ("_owners", "_regexes", "channels", "check", "patterns")

    def __init__(self) -> None:
        self.channels: set[bytes] = set()
        self.patterns: set[bytes] = set()
        self.check = False
        self._regexes: dict[bytes, re.Pattern[bytes]] = {}
        self._owners: dict[bytes, bytes | None] = {}

    def confirmed(self, kind: bytes, name: bytes) -> None:
        """Apply one confirmation: ``kind`` is ``subscribe``, ``psubscribe``, ``unsubscribe``
        or ``punsubscribe``."""
        if kind == b"subscribe":
            self.channels.add(name)
        elif kind == b"unsubscribe":
            self.channels.discard(name)
        elif kind == b"psubscribe":
            self.patterns.add(name)
            if name not in self._regexes:
                self._regexes[name] = glob_regex(name)
        elif kind == b"punsubscribe":
            self.patterns.discard(name)
            self._regexes.pop(name, None)
        else:
            return
        self._changed()

    def reset(self) -> None:
        """Forget everything (the link was lost; Redis dropped its subscriptions)."""
        self.channels.clear()
        self.patterns.clear()
        self._regexes.clear()
        self._changed()

    def _changed(self) -> None:
        self._owners.clear()
        if not self.patterns:
            self.check = False
            return
        by_suffix: dict[bytes, int] = {}
        for name in (*self.patterns, *self.channels):
            key = _suffix(name)
            by_suffix[key] = by_suffix.get(key, 0) + 1
        self.check = any(by_suffix[_suffix(p)] > 1 for p in self.patterns)

    def owns(self, pattern: bytes, channel: bytes) -> bool:
        """Whether a message on ``channel`` that came through ``pattern`` is to be taken."""
        if not self.check:
            return True
        owners = self._owners
        if channel in owners:
            return owners[channel] == pattern
        owner: bytes | None = None
        if channel not in self.channels:
            # Redis matched ``pattern``; should the regex ever disagree, take the message
            # rather than lose it.
            owner = pattern
            for candidate in sorted(self.patterns):
                if self._regexes[candidate].fullmatch(channel):
                    owner = candidate
                    break
        if len(owners) >= 4096:
            owners.clear()
        owners[channel] = owner
        return owner == pattern
