"""Signed messages: HMAC-SHA256 over a message's id, headers and payload, as a middleware
(docs/wire-format.md, "Signed messages").

Every frame a server or client with :class:`Signing` sends is signed (messages, requests,
replies, error replies, RECEIVED); every frame it receives must be signed with one of its keys,
recently, and only once. What is not is dropped and counted by reason (``unsigned``,
``malformed_signature``, ``unknown_key``, ``bad_signature``, ``stale``, ``future``,
``replayed``, ``replay_window_full``); a request among them gets no reply at all.

The signature covers, in one HMAC-SHA256 with the key named by ``sigKey``::

    b"distro-sig-v1\\n" + <id as JSON> + b"\\n" + <headers without "sig" as JSON> + b"\\n"
    + <payload as JSON>

each JSON value in distro's wire encoding (compact, keys in the order they came, UTF-8):
the very bytes a distro writer puts on the wire for them. ``sigKey`` and ``sigTime`` are
headers, so they are signed too.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._codec import dumps
from .._exceptions import MessageError
from .._message import parse_parts
from .._middleware import Incoming, Middleware, Refuse

__all__ = ["SIG", "SIG_KEY", "SIG_TIME", "Signing", "mac_input", "sign_parts"]

SIG = "sig"
"""The header carrying the signature: the HMAC-SHA256, base64url without padding (43 chars)."""
SIG_KEY = "sigKey"
"""The header naming the key that signed the message."""
SIG_TIME = "sigTime"
"""The header carrying when it was signed: whole milliseconds since the Unix epoch (UTC)."""

_PREFIX = b"distro-sig-v1\n"
_SIG_CHARS = 43
_MIN_KEY = 16


def mac_input(id: str, headers: Mapping[str, Any], payload: Any) -> bytes:
    """The bytes an HMAC signs for a message (``headers`` without ``sig``)."""
    return b"".join((_PREFIX, dumps(id), b"\n", dumps(headers), b"\n", dumps(payload)))


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_parts(
    id: str, headers: Mapping[str, Any], payload: Any, key_id: str, key: bytes, now_ms: int
) -> bytes:
    """The frame of a message signed with ``key`` (named ``key_id``) at ``now_ms``: its
    headers, without any earlier signature headers, followed by ``sigKey``, ``sigTime`` and
    ``sig``."""
    signed = {k: v for k, v in headers.items() if k not in _SIG_HEADERS}
    signed[SIG_KEY] = key_id
    signed[SIG_TIME] = now_ms
    signed[SIG] = _b64(_mac(key, mac_input(id, signed, payload)))
    return dumps({"id": id, "headers": signed, "payload": payload})


_SIG_HEADERS = frozenset({SIG, SIG_KEY, SIG_TIME})


class Signing(Middleware):
    """Sign every frame sent and refuse every frame received that is not signed with one of
    ``keys``, recently, once. Give the same instance's settings to both sides (each side its
    own instance).

    :param keys: key id -> secret (bytes, at least 16; a str is taken as UTF-8). Every key
        here is accepted; rotate by adding the new key everywhere, then signing with it, then
        removing the old one.
    :param signing_key: the id of the key this side signs with.
    :param window: seconds a signed message stays valid: older ones are refused ``stale``, and
        ids are remembered that long to refuse a second delivery ``replayed``.
    :param max_skew: seconds a signature may be dated ahead of this clock (``future`` past it).
    :param max_remembered: the most ids remembered at once; past it, new messages are refused
        ``replay_window_full`` (memory stays bounded; nothing is let through unchecked).
    :param clock: the wall clock, in seconds since the epoch (tests set it).

    A confirmed send's repeat (the same id, ``"confirm": true``, sent again because its
    confirmation did not come) is not refused as replayed: the server's window of confirmed
    ids answers it without running the handlers again (docs/wire-format.md).
    """

    def __init__(
        self,
        keys: Mapping[str, bytes | str],
        signing_key: str,
        *,
        window: float = 30.0,
        max_skew: float = 5.0,
        max_remembered: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys: dict[str, bytes] = {}
        for key_id, secret in dict(keys).items():
            if type(key_id) is not str or not key_id:
                raise TypeError(f"key ids must be non-empty strings, got {key_id!r}")
            raw = secret.encode("utf-8") if isinstance(secret, str) else secret
            if not isinstance(raw, bytes):
                raise TypeError(f"key {key_id!r} must be bytes or str")
            if len(raw) < _MIN_KEY:
                raise ValueError(f"key {key_id!r} is {len(raw)} bytes; use at least {_MIN_KEY}")
            self._keys[key_id] = raw
        if signing_key not in self._keys:
            raise ValueError(f"signing_key {signing_key!r} is not one of the keys")
        if not 0 < window < 86_400 or not 0 <= max_skew < 3_600:
            raise ValueError("window must be in (0, 86400) seconds, max_skew in [0, 3600)")
        if type(max_remembered) is not int or max_remembered < 1:
            raise ValueError(f"max_remembered must be a positive integer, got {max_remembered!r}")
        self._key_id = signing_key
        self._key = self._keys[signing_key]
        self._window = window
        self._skew = max_skew
        self._max = max_remembered
        self._clock = clock
        self._seen: dict[str, float] = {}  # id -> when it may be forgotten (epoch seconds)
        self._order: collections.deque[tuple[float, str]] = collections.deque()

    # -- sending --------------------------------------------------------------------------

    def outgoing(self, frame: bytes) -> bytes:
        """Sign ``frame`` (a message's wire form)."""
        id, headers, payload = parse_parts(frame)
        return sign_parts(id, headers, payload, self._key_id, self._key, self._now_ms())

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- receiving ------------------------------------------------------------------------

    def received(self, ctx: Incoming) -> None:
        """Server: refuse the message unless it is signed, fresh and new; the handlers see
        it without the signature headers."""
        if self.verify(ctx.message.id, ctx.headers, ctx.message.payload):
            ctx.state[self] = True  # its id is remembered: see handled()
        ctx.remove_headers(SIG, SIG_KEY, SIG_TIME)

    def handled(self, ctx: Incoming) -> None:
        """Server: a message whose handlers failed, or that was not handled here (shed, the
        server closing), is forgotten, so that its redelivery (by a transport that redelivers)
        is not refused as a replay."""
        if ctx.state.get(self) and (ctx.failed or ctx.dropped is not None):
            self._seen.pop(ctx.message.id, None)

    def reply_received(self, ctx: Incoming) -> None:
        """Client: refuse the reply unless it is signed, fresh and new."""
        self.verify(ctx.message.id, ctx.headers, ctx.message.payload)

    def verify(self, id: str, headers: Mapping[str, Any], payload: Any) -> bool:
        """Check one message; remember its id.

        :returns: whether its id was remembered now (False: a confirmed send's repeat).
        :raises Refuse: with the reason it is refused.
        """
        sig = headers.get(SIG)
        key_id = headers.get(SIG_KEY)
        stamp = headers.get(SIG_TIME)
        if sig is None and key_id is None and stamp is None:
            raise Refuse("unsigned", f"message {id} is not signed")
        if type(sig) is not str or len(sig) != _SIG_CHARS or type(key_id) is not str:
            raise Refuse("malformed_signature", f"message {id}: {SIG}/{SIG_KEY} malformed")
        if type(stamp) is not int or stamp < 0:
            raise Refuse("malformed_signature", f"message {id}: {SIG_TIME} is not an integer")
        key = self._keys.get(key_id)
        if key is None:
            raise Refuse("unknown_key", f"message {id}: key {key_id[:40]!r} is not known")
        try:
            given = base64.urlsafe_b64decode(sig + "=")
        except (binascii.Error, ValueError):
            raise Refuse("malformed_signature", f"message {id}: {SIG} is not base64url") from None
        signed = {k: v for k, v in headers.items() if k != SIG}
        try:
            expected = _mac(key, mac_input(id, signed, payload))
        except (MessageError, ValueError):
            raise Refuse("bad_signature", f"message {id}: cannot be encoded again") from None
        if not hmac.compare_digest(given, expected):
            raise Refuse("bad_signature", f"message {id}: signature does not match")
        now = self._clock()
        age = now - stamp / 1000
        if age > self._window:
            raise Refuse("stale", f"message {id}: signed {age:.1f}s ago")
        if -age > self._skew:
            raise Refuse("future", f"message {id}: signed {-age:.1f}s in the future")
        return self._remember(id, stamp / 1000 + self._window + self._skew, now, headers)

    def _remember(self, id: str, until: float, now: float, headers: Mapping[str, Any]) -> bool:
        seen, order = self._seen, self._order
        while order and order[0][0] < now:
            expiry, old = order.popleft()
            if seen.get(old) == expiry:
                del seen[old]
        if id in seen:
            if headers.get("confirm") is True:
                return False  # a confirmed send's repeat: the server's confirm window answers it
            raise Refuse("replayed", f"message {id} came before")
        if len(seen) >= self._max:
            raise Refuse("replay_window_full", f"message {id}: {len(seen)} ids remembered")
        seen[id] = until
        order.append((until, id))
        return True
