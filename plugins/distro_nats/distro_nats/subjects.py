"""Subject names: from a message's uri and verb, and from a server's routes. Pure: no I/O.

The mapping (documented in the README, section "Subjects"):

* a message goes on ``<prefix>.<VERB>.<uri tokens>`` (GET when it has no verb); a uri that
  starts with ``/`` (almost all do) loses that one ``/``, and every ``/``-separated segment of
  the rest becomes one token: ``/customer/7`` POST is ``distro.POST.customer.7``;
* literal text is lower-cased first, as the core's routing compares it (``/Customer/7`` is
  ``distro.POST.customer.7`` too);
* a token keeps ASCII letters, digits and printable punctuation; everything NATS reserves or
  may not carry is escaped as ``%XX`` (upper-case hex of each UTF-8 byte): ``.`` (the token
  separator), ``*`` and ``>`` (wildcards), ``%`` (the escape itself), space and every other
  whitespace or control character, and every non-ASCII character (NATS promises nothing about
  non-ASCII subjects): ``/files/a.b`` is ``distro.GET.files.a%2Eb``, ``/Zoë`` is
  ``distro.GET.zo%C3%AB``;
* an empty segment is the token ``%`` (``/a//b`` is ``distro.GET.a.%.b``, ``/`` is
  ``distro.GET.%``), and a uri that does not start with ``/`` gets the first token ``%%``
  (``a/b`` is ``distro.GET.%%.a.b``). Neither can come out of escaping, where ``%`` always
  starts a three-character escape, so no two uris (as routing tells them apart) share a subject;
* a route subscribes to the same with each ``{param}`` segment written ``*`` (any one token):
  ``/customer/{id}`` GET is ``distro.GET.customer.*``; a server with catch-all handlers
  subscribes to ``<prefix>.<VERB>.>`` for each verb instead (every message, once);
* control subjects never have a verb as their second token: ``<prefix>._ack.<n>`` (RECEIVED
  for the server whose address port is ``n``); replies go to the client's inbox,
  ``<inbox prefix>.<unique>.r`` (``_INBOX`` by default, as NATS requesters use).

:func:`uri_of` reverses :func:`message_subject` (for tests and tools).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from distro_core import VERBS
from distro_core.transport import RouteInfo

__all__ = [
    "ACK_MARK",
    "EMPTY",
    "MAX_SUBJECT",
    "RELATIVE",
    "Owners",
    "ack_subject",
    "catch_all_subjects",
    "check_prefix",
    "escape",
    "is_valid_subject",
    "matches",
    "message_subject",
    "plan",
    "route_subject",
    "unescape",
    "uri_of",
]

EMPTY = "%"
"""The token of an empty uri segment."""
RELATIVE = "%%"
"""The first token of a uri that does not start with ``/``."""
ACK_MARK = "_ack"
"""The second token of RECEIVED subjects (no verb is spelled so)."""
MAX_SUBJECT = 3500
"""The longest subject sent or subscribed (bytes): a NATS server refuses protocol lines over
its ``max_control_line`` (4096 by default) and closes the connection, so longer ones are
refused before sending."""

_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - set(".*>%")
_NEEDS_ESCAPE = re.compile(r"[^!-$&-)+-\-/-=?-~]")  # everything outside _SAFE
_ESCAPED_RUN = re.compile(r"(?:%[0-9A-F]{2})+")
_TOKEN_OK = re.compile(r"[!-~]+")


def _escape_char(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode("utf-8", "surrogatepass"))


def escape(text: str) -> str:
    """One subject token for ``text`` (a uri segment, an id, a group name); ``text`` must not
    be empty (see :data:`EMPTY`). The result is ASCII with no ``.``, ``*``, ``>`` or
    whitespace, and only ``%XX`` escapes use ``%``."""
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def unescape(token: str) -> str:
    """The text :func:`escape` made ``token`` from."""
    if "%" not in token:
        return token
    return _ESCAPED_RUN.sub(_unescape_run, token)


def _unescape_run(match: re.Match[str]) -> str:
    return bytes.fromhex(match.group().replace("%", "")).decode("utf-8", "surrogatepass")


def _token(segment: str) -> str:
    return escape(segment) if segment else EMPTY


def _tokens(parts: list[str]) -> str:
    if parts[0] == "" and len(parts) > 1:
        return ".".join([_token(p) for p in parts[1:]])
    return RELATIVE + "." + ".".join([_token(p) for p in parts])


def message_subject(prefix: str, uri: str, verb: str | None) -> str:
    """The subject a message with this uri and verb is published on (upper-case verb, or None
    for GET)."""
    return f"{prefix}.{verb or 'GET'}.{_tokens(uri.lower().split('/'))}"


def uri_of(subject: str, prefix: str) -> tuple[str, str]:
    """``(verb, uri)`` of a message subject (the uri as routing compares it: lower-case).

    :raises ValueError: ``subject`` is not a message subject under ``prefix``.
    """
    head = prefix + "."
    if not subject.startswith(head):
        raise ValueError(f"{subject!r} is not under prefix {prefix!r}")
    verb, _, rest = subject[len(head) :].partition(".")
    if verb not in VERBS or not rest:
        raise ValueError(f"{subject!r} is not a message subject")
    tokens = rest.split(".")
    relative = tokens[0] == RELATIVE
    if relative:
        tokens = tokens[1:]
    segments = ["" if t == EMPTY else unescape(t) for t in tokens]
    uri = "/".join(segments)
    return verb, uri if relative else "/" + uri


def route_subject(prefix: str, route: RouteInfo) -> str:
    """The subject a server subscribes to for one route (``*`` for each parameter)."""
    segments = route.segments
    if segments[0].text == "" and not segments[0].param and len(segments) > 1:
        segments = segments[1:]
        lead = ""
    else:
        lead = RELATIVE + "."
    tokens = ".".join(["*" if s.param else _token(s.text) for s in segments])
    return f"{prefix}.{route.verb}.{lead}{tokens}"


def catch_all_subjects(prefix: str) -> frozenset[str]:
    """What a server with catch-all handlers subscribes to: every message subject, once."""
    return frozenset(f"{prefix}.{verb}.>" for verb in VERBS)


def plan(prefix: str, routes: Iterable[RouteInfo], catch_all: bool) -> frozenset[str]:
    """The subjects a server subscribes to; a catch-all replaces the routes' subjects."""
    if catch_all:
        return catch_all_subjects(prefix)
    return frozenset(route_subject(prefix, route) for route in routes)


def ack_subject(prefix: str, port: int) -> str:
    """The subject the server whose address port is ``port`` takes RECEIVED on."""
    return f"{prefix}.{ACK_MARK}.{port}"


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is a usable subject prefix: one or more ``.``-separated tokens of
    printable ASCII without wildcards.

    :raises ValueError: it is not.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"must be a non-empty string, got {prefix!r:.80}")
    for token in prefix.split("."):
        if not _TOKEN_OK.fullmatch(token) or token in ("*", ">") or "*" in token or ">" in token:
            raise ValueError(
                f"must be subject tokens (printable ASCII, no wildcards, no empty token) "
                f"separated by '.', got {prefix!r:.80}"
            )
    return prefix


def is_valid_subject(subject: str, *, wildcards: bool = False) -> bool:
    """Whether ``subject`` is a valid NATS subject: non-empty tokens of printable ASCII
    separated by ``.``; with ``wildcards``, ``*`` tokens and a final ``>`` token are allowed
    (a subscription), otherwise no token contains ``*`` or ``>`` (a publish)."""
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and index == len(tokens) - 1)):
            continue
        if not _TOKEN_OK.fullmatch(token) or "*" in token or ">" in token:
            return False
    return True


def matches(pattern: str, subject: str) -> bool:
    """Whether the NATS subscription ``pattern`` matches the literal ``subject``."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def _may_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both subscriptions (for the ones :func:`plan` makes)."""
    x, y = a.split("."), b.split(".")
    for index in range(max(len(x), len(y))):
        if index >= len(x) or index >= len(y):
            return False
        s, t = x[index], y[index]
        if s == ">" or t == ">":
            return True
        if s != t and s != "*" and t != "*":
            return False
    return True


class Owners:
    """Which subscription of one server takes a message that several match.

    NATS delivers a message once per matching subscription of a connection: ``/a/{x}`` and
    ``/a/b`` both match ``distro.GET.a.b``. The server takes it from one of them only, its
    owner: the subject itself when subscribed, otherwise the first matching subscription in
    sorted order. :attr:`check` is false (nothing to decide) when no two subscriptions can
    match one subject, the common case.
    """

    __slots__ = ("_cache", "check", "subjects")

    def __init__(self, subjects: Iterable[str] = ()) -> None:
        self.subjects: tuple[str, ...] = ()
        self.check = False
        self._cache: dict[str, str] = {}
        self.update(subjects)

    def update(self, subjects: Iterable[str]) -> None:
        """Take the current set of subscriptions."""
        self.subjects = tuple(sorted(set(subjects)))
        self._cache.clear()
        subs = self.subjects
        self.check = any(
            _may_overlap(subs[i], subs[j])
            for i in range(len(subs))
            for j in range(i + 1, len(subs))
        )

    def owner(self, subject: str) -> str | None:
        """The subscription that takes a message on ``subject`` (None: none matches)."""
        cache = self._cache
        found = cache.get(subject)
        if found is not None:
            return found
        if subject in self.subjects:
            found = subject
        else:
            found = next((s for s in self.subjects if matches(s, subject)), None)
        if found is not None:
            if len(cache) >= 4096:
                cache.clear()
            cache[subject] = found
        return found
