"""Frames for stream transports (``tcp``): newline-delimited, or one JSON object after another,
as pure code.

A stream has no message boundaries: one read may hold half a message, or fifty. The
:class:`FrameDecoder` is fed whatever the socket gave (``feed(data)``) and returns the complete
frames so far, keeping the partial remainder for the next feed; ``feed(b"")`` means end of
stream. A driver reading with ``recv_into`` into one reused buffer hands it over as it is
(``feed_from(buffer, nbytes)``): the decoder copies out what it returns and what it keeps.

A frame is one message's compact JSON, which never holds a raw newline byte (JSON escapes control
characters inside strings, and no UTF-8 multi-byte sequence contains 0x0A), so a newline is a
safe delimiter. :func:`encode_frame` adds it.

The JavaScript original's tcp client writes one message with nothing after it and keeps the
connection open, so a decoder also ends a frame where a JSON object closes. It does so until the
stream's first newline (the *object phase*): there, outside objects, spaces, tabs and carriage
returns are skipped and ``{`` starts an object, which is a frame as soon as its closing brace
arrives (strings, escapes and nesting by ``{}``/``[]`` are tracked, each byte examined once
however the stream is cut). The first newline ends the phase: a newline inside an object ends
that frame there (an invalid one), and from then on frames are lines. A byte that cannot start
an object (outside one) ends the phase too and starts the first line. So a newline-delimited peer
pays for the object scan on its first frame only, and the framing depends on the bytes alone,
never on how reads cut them.

Sans-IO like h11: no sockets, no event loop, no clock; the transport is a thin driver around
it. Errors, all :class:`FramingError` (a :class:`~distro_core.MessageError`)::

    FramingError
    ├── FrameTooLarge     a frame (or a partial one) longer than max_frame_size
    └── TruncatedFrame    end of stream in the middle of a frame

Both are terminal for a decoder, as h11's protocol errors are: the stream cannot be trusted to
resynchronise, so the driver drops the connection.
"""

from __future__ import annotations

import re
from typing import NoReturn

from ._exceptions import MessageError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameDecoder",
    "FrameTooLarge",
    "FramingError",
    "TruncatedFrame",
    "encode_frame",
]

DEFAULT_MAX_FRAME_SIZE = 1_048_576
"""The largest frame, in bytes and without its newline, a decoder accepts by default (1 MiB)."""

_NL = b"\n"
_NL_BYTE = 0x0A
_MIN_CAPACITY = 1024  # the least room made for a partial frame
_KEEP_CAPACITY = 65536  # room for partial frames kept from one frame to the next; more is freed
_VIEW_AT = 4096  # chunks of frames this long are copied through a memoryview, shorter ones not

# The object phase's scanner: each search jumps (in C) to the next byte that matters.
_OUTSIDE = re.compile(rb"[^ \t\r]")  # outside an object: the first byte not skipped
_IN_OBJECT = re.compile(rb'[][{}"\n]')  # in an object, outside strings
_IN_STRING = re.compile(rb'["\\\n]')  # in a string
_LBRACE, _LBRACKET, _QUOTE, _BACKSLASH = b'{["\\'


class FramingError(MessageError):
    """A byte stream that cannot be split into frames.

    :ivar frames: the complete frames that came before the error in the same feed; a driver
        should still deliver them, since they were whole and in order.
    """

    def __init__(self, text: str, frames: list[bytes] | None = None) -> None:
        super().__init__(text)
        self.frames: list[bytes] = frames if frames is not None else []


class FrameTooLarge(FramingError):
    """A frame is longer than the decoder's limit; raised as soon as the limit is passed, so
    the decoder never holds more than ``limit`` bytes of one frame.

    :ivar size: bytes of the frame seen so far (at least ``limit + 1``; the whole frame when
        its newline had already arrived).
    :ivar limit: the decoder's ``max_frame_size``.
    """

    def __init__(self, size: int, limit: int, frames: list[bytes] | None = None) -> None:
        super().__init__(
            f"frame of {size} bytes or more exceeds max_frame_size of {limit} bytes", frames
        )
        self.size = size
        self.limit = limit


class TruncatedFrame(FramingError):
    """The stream ended in the middle of a frame (data after the last newline).

    :ivar size: the bytes of the partial frame that were discarded.
    """

    def __init__(self, size: int) -> None:
        super().__init__(f"stream ended in the middle of a frame ({size} bytes without a newline)")
        self.size = size


class FrameDecoder:
    """Splits a byte stream into frames: JSON objects until its first newline, then lines (see
    the module docstring).

    Feed it each chunk read from the stream (:meth:`feed`, or :meth:`feed_from` for a read buffer
    the driver reuses); each call returns the frames that chunk completed (``bytes`` without the
    newline, possibly empty for blank lines), in order. The frames are new ``bytes`` objects,
    never views into what was fed, and the decoder keeps no reference to it: the next read may
    overwrite it at once.

    Newlines are found with ``find``/``rfind`` (``memchr``), so the middle of a long frame is not
    scanned byte by byte, and a chunk of many frames is split once (``bytes.split``). A partial
    frame waits in a ``bytearray`` whose capacity at least doubles when it grows (``+=`` would
    reallocate to the exact size each time, copying a long frame over and over), so a frame costs
    linear time however it is cut, even one byte at a time. The capacity is kept while long
    frames follow one another and let go past 64 KiB once a chunk starts with no partial frame.

    In the object phase, compiled regular expressions jump to the next byte that matters (a
    quote, a backslash, a bracket, a newline), and the scanner's state (nesting depth, inside a
    string, after a backslash) carries over from one chunk to the next: every byte is examined
    once, so an object cut into a million one-byte reads costs linear time too.

    :param max_frame_size: the longest frame accepted, in bytes without the newline.
    :raises ValueError: ``max_frame_size`` is not a positive integer.
    """

    __slots__ = ("_buffer", "_depth", "_done", "_escape", "_held", "_limit", "_slow", "_string")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ValueError(f"max_frame_size must be a positive integer, got {max_frame_size!r}")
        self._limit = max_frame_size
        self._buffer = bytearray()  # its first ``_held`` bytes are the partial frame
        self._held = 0
        self._done = False  # end of stream seen, or an error raised
        self._slow = True  # not on the lines' path: in the object phase, or done
        self._depth = 0  # the object phase's nesting depth; 0 is outside an object
        self._string = False  # inside a string of the object
        self._escape = False  # the last chunk ended with the backslash of an escape

    @property
    def max_frame_size(self) -> int:
        """The longest frame accepted, in bytes without the newline."""
        return self._limit

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held until its newline or closing brace arrives (never above
        the limit)."""
        return self._held

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next chunk of the stream; an empty one (``b""``) means the stream ended.

        :param data: bytes as read from the stream, any length: ``bytes``, ``bytearray`` or a
            contiguous byte ``memoryview``; the caller may change it once this returns.
        :returns: the frames completed by this chunk, in order (often empty).
        :raises FrameTooLarge: a frame, or the partial frame held, passed ``max_frame_size``;
            ``exc.frames`` holds the whole frames before it.
        :raises TruncatedFrame: the stream ended (``b""``) with a partial frame held.
        :raises FramingError: data was fed after the end of stream or after an error.
        """
        if type(data) is memoryview:
            data = data.tobytes()  # a view has no find(); bytes and bytearray are used as they are
        return self.feed_from(data, len(data))

    def feed_from(self, buffer: bytes | bytearray, nbytes: int) -> list[bytes]:
        """Take ``buffer[:nbytes]`` as the next chunk, without copying it first; ``nbytes == 0``
        means the stream ended. Made for ``recv_into`` and ``asyncio.BufferedProtocol``: the same
        buffer may be read into again as soon as this returns.

        :param buffer: the read buffer.
        :param nbytes: how many bytes at its start were just read.
        :returns: the frames completed by this chunk, in order (often empty).
        :raises ValueError: ``nbytes`` is negative or more than ``len(buffer)``.
        :raises FrameTooLarge: as :meth:`feed`.
        :raises TruncatedFrame: as :meth:`feed`.
        :raises FramingError: as :meth:`feed`.
        """
        if self._slow or not 0 < nbytes <= len(buffer):
            return self._edge(buffer, nbytes)
        limit = self._limit
        held = self._held
        if buffer[nbytes - 1] == _NL_BYTE:  # a read ending with a frame: the common case
            last = nbytes - 1
        else:
            last = buffer.rfind(_NL, 0, nbytes)
            if last < 0:
                size = held + nbytes
                if size > limit:
                    self._fail(size, [])
                self._hold(memoryview(buffer)[:nbytes])
                return []
        frames: list[bytes]
        if not held:
            if len(self._buffer) > _KEEP_CAPACITY:
                self._buffer = bytearray()  # long frames have stopped coming for now
            # One copy of the whole frames, one split (a single frame is not copied again);
            # below a few KiB a second copy costs less than making a memoryview.
            if last < _VIEW_AT:
                frames = bytes(buffer[:last]).split(_NL)
            else:
                frames = memoryview(buffer)[:last].tobytes().split(_NL)
        else:
            # Only the head of the first frame is scanned for its newline (memchr), not the
            # many bytes held before it.
            first = buffer.find(_NL, 0, last + 1)
            size = held + first
            if size > limit:
                self._fail(size, [])
            view = memoryview(buffer)
            frames = [b"".join((memoryview(self._buffer)[:held], view[:first]))]
            self._held = 0
            if first < last:
                frames += view[first + 1 : last].tobytes().split(_NL)
        rest = nbytes - last - 1
        # A chunk no longer than the limit cannot hold a frame over it: skip the per-frame
        # check on the hot path (the tcp driver reads 64 KiB at most, the default limit 1 MiB).
        if nbytes > limit:
            for index, frame in enumerate(frames):
                if len(frame) > limit:
                    self._fail(len(frame), frames[:index])
            if rest > limit:
                self._fail(rest, frames)
        if rest:
            self._hold(memoryview(buffer)[last + 1 : nbytes])
        return frames

    def _edge(self, buffer: bytes | bytearray, nbytes: int) -> list[bytes]:
        """:meth:`feed_from` off its hot path: a bad ``nbytes``, the end, data after it, or the
        object phase."""
        if not 0 <= nbytes <= len(buffer):
            raise ValueError(f"nbytes must be 0..{len(buffer)} (the buffer's size), got {nbytes}")
        if self._done:
            if nbytes:
                raise FramingError("the frame decoder already saw the end of the stream or failed")
            return []
        if not nbytes:
            return self._end()
        return self._scan(buffer, nbytes)

    def _scan(self, buffer: bytes | bytearray, nbytes: int) -> list[bytes]:
        """The object phase: frames end where objects close, until the first newline."""
        frames: list[bytes] = []
        depth = self._depth
        string = self._string
        start = 0  # where the object in progress starts in this chunk (after what is held)
        at = 0
        if self._escape:  # the byte after a backslash is skipped, unless it is a newline
            self._escape = False
            if buffer[0] != _NL_BYTE:
                at = 1
        while at < nbytes:
            if not depth:
                found = _OUTSIDE.search(buffer, at, nbytes)
                if found is None:
                    break  # only whitespace between objects: skipped
                at = found.start()
                byte = buffer[at]
                if byte == _LBRACE:
                    depth = 1
                    start = at
                    at += 1
                    continue
                # A newline, or a byte no object starts with: lines from here on.
                return self._to_lines(frames, buffer, at + (byte == _NL_BYTE), nbytes)
            if string:
                found = _IN_STRING.search(buffer, at, nbytes)
                if found is None:
                    break
                at = found.start()
                byte = buffer[at]
                if byte == _QUOTE:
                    string = False
                    at += 1
                    continue
                if byte == _BACKSLASH:
                    if at + 1 == nbytes:
                        self._escape = True
                        break
                    # Skip the escaped byte, unless it is a newline (found next).
                    at += 1 if buffer[at + 1] == _NL_BYTE else 2
                    continue
            else:
                found = _IN_OBJECT.search(buffer, at, nbytes)
                if found is None:
                    break
                at = found.start()
                byte = buffer[at]
                if byte == _QUOTE:
                    string = True
                    at += 1
                    continue
                if byte in (_LBRACE, _LBRACKET):
                    depth += 1
                    at += 1
                    continue
                if byte != _NL_BYTE:  # a closing brace or bracket
                    depth -= 1
                    at += 1
                    if not depth:
                        frames.append(self._take(buffer, start, at, frames))
                    continue
            # A newline inside an object: the object so far is a frame, then lines.
            frames.append(self._take(buffer, start, at, frames))
            return self._to_lines(frames, buffer, at + 1, nbytes)
        self._depth = depth
        self._string = string
        if depth:
            size = self._held + nbytes - start
            if size > self._limit:
                self._fail(size, frames)
            self._hold(memoryview(buffer)[start:nbytes])
        return frames

    def _take(self, buffer: bytes | bytearray, start: int, end: int, frames: list[bytes]) -> bytes:
        """The frame of what is held and ``buffer[start:end]``; ``frames`` are those before it."""
        held = self._held
        size = held + end - start
        if size > self._limit:
            self._fail(size, frames)
        if not held:
            return memoryview(buffer)[start:end].tobytes()
        frame = b"".join((memoryview(self._buffer)[:held], memoryview(buffer)[start:end]))
        self._held = 0
        if len(self._buffer) > _KEEP_CAPACITY:
            self._buffer = bytearray()
        return frame

    def _to_lines(
        self, frames: list[bytes], buffer: bytes | bytearray, at: int, nbytes: int
    ) -> list[bytes]:
        """End the object phase; ``buffer[at:nbytes]`` is the start of the lines."""
        self._slow = False
        self._depth = 0
        self._string = False
        if at == nbytes:
            return frames
        rest = memoryview(buffer)[at:nbytes].tobytes()
        try:
            return frames + self.feed_from(rest, len(rest))
        except FramingError as exc:
            exc.frames = frames + exc.frames
            raise

    def _hold(self, data: memoryview) -> None:
        """Append ``data`` to the partial frame; the caller checked the limit."""
        buffer = self._buffer
        start = self._held
        end = start + len(data)
        if end > len(buffer):
            # Never past the limit: the held bytes (end) are within it already.
            grown = bytearray(min(max(end, 2 * len(buffer), _MIN_CAPACITY), self._limit))
            grown[:start] = memoryview(buffer)[:start]
            self._buffer = buffer = grown
        buffer[start:end] = data
        self._held = end

    def _end(self) -> list[bytes]:
        self._done = self._slow = True
        if self._held:
            size = self._held
            self._drop()
            raise TruncatedFrame(size)
        return []

    def _fail(self, size: int, frames: list[bytes]) -> NoReturn:
        self._done = self._slow = True
        self._drop()
        raise FrameTooLarge(size, self._limit, frames)

    def _drop(self) -> None:
        self._buffer = bytearray()
        self._held = 0


def encode_frame(data: bytes) -> bytes:
    """Make one frame of an encoded message: ``data`` and a newline.

    :param data: the message's compact JSON, as ``Message.to_bytes()`` gives it.
    :returns: the bytes to write to the stream.
    :raises MessageError: ``data`` holds a raw newline, which would split it into two frames.
    """
    if data.find(_NL) >= 0:
        raise MessageError(
            "a frame cannot hold a raw newline; encode messages as compact JSON "
            "(Message.to_bytes())"
        )
    return data + _NL
