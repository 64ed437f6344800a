"""RESP2, the Redis wire protocol: commands out, replies in. Pure (sans-IO).

The transport's links speak RESP2 themselves once redis-py has connected and authenticated them:
the subscriber loop is the hot path, and decoding its pushes here, a whole socket read at a time,
is what keeps a server's cost per message low. :class:`Decoder` is fed bytes as they arrive and
returns every reply they complete; a reply cut across reads waits for the rest (a large bulk
string is collected without copying the buffer on every read).

Replies decode to Python values: bulk and simple strings to ``bytes``, integers to ``int``,
arrays (and RESP3 pushes, for robustness) to ``list``, null to ``None`` and errors to
:class:`ReplyError` values (returned, not raised: an error answers one command, the link goes on).
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = [
    "CRLF",
    "Decoder",
    "ProtocolError",
    "Reply",
    "ReplyError",
    "pack_command",
    "publish_head",
]

CRLF = b"\r\n"

MAX_LINE = 64 * 1024
"""A type line (``$123``, ``:7``, ``-ERR ...``) longer than this is not RESP."""

MAX_DEPTH = 32
"""Arrays nested deeper than this are not anything Redis sends the transport."""


class ProtocolError(ValueError):
    """The bytes are not RESP: the link is out of step and must be dropped."""


class ReplyError:
    """An error reply (``-ERR ...``) from Redis.

    :ivar message: its text.
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)

    def __repr__(self) -> str:
        return f"ReplyError({self.message!r})"


Reply: TypeAlias = "bytes | int | ReplyError | list[Reply] | None"
"""One decoded reply."""


def pack_command(*args: bytes) -> bytes:
    """Encode one command (its name and arguments, as bytes) as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


def publish_head(channel: bytes) -> bytes:
    """The start of ``PUBLISH channel <data>``, up to (not including) the data's length line.

    A sender keeps this per channel, so publishing costs one small formatting of the length.
    """
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n" % (len(channel), channel)


_NEED_MORE = -1

# Pub/sub pushes, the bulk of a subscriber's input, get a fast path: their array header and
# kind are fixed bytes, then come two (message) or three (pmessage) bulk strings.
_MESSAGE = b"*3\r\n$7\r\nmessage\r\n$"
_PMESSAGE = b"*4\r\n$8\r\npmessage\r\n$"
_MESSAGE_KIND = b"message"
_PMESSAGE_KIND = b"pmessage"


class Decoder:
    """Turns a byte stream from Redis into replies, however the stream is split into reads."""

    __slots__ = ("_buffer", "_chunks", "_have", "_need")

    def __init__(self) -> None:
        self._buffer = b""
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 0

    def feed(self, data: bytes) -> list[Reply]:
        """Take the next bytes read from the link; return the replies now complete, in order.

        :raises ProtocolError: the stream is not RESP (the decoder is then unusable).
        """
        if self._chunks:
            # Collecting a large reply: join only once all of it is here.
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        elif self._buffer:
            data = self._buffer + data
        replies: list[Reply] = []
        size = len(data)
        pos = 0
        try:
            while pos < size:
                end = _NEED_MORE
                if data.startswith(_MESSAGE, pos):
                    reply, end = _push(data, pos + 18, _MESSAGE_KIND, 2)
                elif data.startswith(_PMESSAGE, pos):
                    reply, end = _push(data, pos + 19, _PMESSAGE_KIND, 3)
                if end == _NEED_MORE:  # not a push, or one the fast path leaves alone
                    reply, end = self._parse(data, pos)
                    if end == _NEED_MORE:
                        break
                replies.append(reply)
                pos = end
        except ValueError as exc:
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"expected an integer in a bulk string's length: {exc}") from None
        if pos == size:
            self._buffer = b""
            return replies
        rest = data[pos:] if pos else data
        need = self._need - pos
        if need > len(rest):
            self._chunks = [rest]
            self._have = len(rest)
            self._need = need
            self._buffer = b""
        else:
            if b"\r\n" not in rest and len(rest) > MAX_LINE:
                raise ProtocolError(f"no line end within {MAX_LINE} bytes; this is not RESP")
            self._buffer = rest
        return replies

    def _parse(self, data: bytes, pos: int, depth: int = 0) -> tuple[Reply, int]:
        """Parse the reply at ``pos``: ``(reply, end)``, or ``(None, _NEED_MORE)`` with
        ``self._need`` set to how far into ``data`` the reply reaches, when known."""
        end = data.find(b"\r\n", pos)
        if end < 0:
            self._need = 0
            return None, _NEED_MORE
        kind = data[pos]
        if kind == 36:  # $ bulk string
            length = _int(data, pos + 1, end)
            if length < 0:
                return None, end + 2
            start = end + 2
            stop = start + length
            if stop + 2 > len(data):
                self._need = stop + 2
                return None, _NEED_MORE
            if data[stop : stop + 2] != b"\r\n":
                raise ProtocolError(f"bulk string of {length} bytes is not followed by CRLF")
            return data[start:stop], stop + 2
        if kind == 42 or kind == 62:  # * array, > push (RESP3)
            count = _int(data, pos + 1, end)
            if count < 0:
                return None, end + 2
            if depth >= MAX_DEPTH:
                raise ProtocolError(f"arrays nested more than {MAX_DEPTH} deep")
            items: list[Reply] = []
            cursor = end + 2
            size = len(data)
            for _ in range(count):
                if cursor < size and data[cursor] == 36:
                    # Inline the common case (pub/sub pushes are arrays of bulk strings).
                    line_end = data.find(b"\r\n", cursor)
                    if line_end < 0:
                        self._need = 0
                        return None, _NEED_MORE
                    length = _int(data, cursor + 1, line_end)
                    if length < 0:
                        items.append(None)
                        cursor = line_end + 2
                        continue
                    start = line_end + 2
                    stop = start + length
                    if stop + 2 > size:
                        self._need = stop + 2
                        return None, _NEED_MORE
                    if data[stop : stop + 2] != b"\r\n":
                        raise ProtocolError(f"bulk string of {length} bytes lacks its CRLF")
                    items.append(data[start:stop])
                    cursor = stop + 2
                else:
                    item, cursor = self._parse(data, cursor, depth + 1)
                    if cursor == _NEED_MORE:
                        return None, _NEED_MORE
                    items.append(item)
            return items, cursor
        if kind == 58:  # : integer
            return _int(data, pos + 1, end), end + 2
        if kind == 43:  # + simple string
            return data[pos + 1 : end], end + 2
        if kind == 45:  # - error
            return ReplyError(data[pos + 1 : end].decode("utf-8", "replace")), end + 2
        if kind == 95:  # _ null (RESP3)
            return None, end + 2
        raise ProtocolError(f"unexpected reply type byte {bytes([kind])!r}")


def _push(data: bytes, cursor: int, kind: bytes, count: int) -> tuple[Reply, int]:
    """The fast path for a pub/sub push: ``count`` bulk strings from ``cursor`` (just past the
    first one's "$"). Anything unusual (cut off, malformed) returns ``_NEED_MORE`` and is left
    to the general parser, which knows how to wait or to complain.

    :raises ValueError: a length is not an integer.
    """
    item: list[Reply] = [kind]
    while True:
        end = data.find(b"\r\n", cursor)
        if end < 0:
            return None, _NEED_MORE
        start = end + 2
        stop = start + int(data[cursor:end])
        if stop < start or data[stop : stop + 2] != b"\r\n":
            return None, _NEED_MORE
        item.append(data[start:stop])
        count -= 1
        if not count:
            return item, stop + 2
        if data[stop + 2 : stop + 3] != b"$":
            return None, _NEED_MORE
        cursor = stop + 3


def _int(data: bytes, start: int, end: int) -> int:
    text = data[start:end]
    try:
        return int(text)
    except ValueError:
        raise ProtocolError(f"expected an integer, got {text[:40]!r}") from None
