"""Newline-delimited frames for stream transports (``tcp``), as pure code.

A stream has no message boundaries: one read may hold half a message, or fifty. The
:class:`FrameDecoder` is fed whatever the socket gave (``feed(data)``) and returns the complete
frames so far, keeping the partial remainder for the next feed; ``feed(b"")`` means end of
stream. ``data`` may be a view into a read buffer that the driver reuses (``recv_into``): the
decoder copies what it keeps and holds no reference to it.

A frame is one message's compact JSON, which never holds a raw newline byte (JSON escapes control
characters inside strings, and no UTF-8 multi-byte sequence contains 0x0A), so a newline is a
safe delimiter. :func:`encode_frame` adds it.

Sans-IO like h11: no sockets, no event loop, no clock; the transport is a thin driver around
it. Errors, all :class:`FramingError` (a :class:`~distro_core.MessageError`)::

    FramingError
    ├── FrameTooLarge     a frame (or a partial one) longer than max_frame_size
    └── TruncatedFrame    end of stream in the middle of a frame

Both are terminal for a decoder, as h11's protocol errors are: the stream cannot be trusted to
resynchronise, so the driver drops the connection.
"""

from __future__ import annotations

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
    """Splits a byte stream into newline-delimited frames.

    Feed it each chunk read from the stream; each call returns the frames that chunk completed
    (``bytes`` without the newline, possibly empty for blank lines), in order. A chunk is split
    once (``bytes.split``); a partial frame waits in a ``bytearray`` that grows in place, so a
    frame fed one byte at a time still costs linear time. The frames are new ``bytes`` objects,
    never views into what was fed, so a chunk may come from a buffer that is overwritten by the
    next read.

    :param max_frame_size: the longest frame accepted, in bytes without the newline.
    :raises ValueError: ``max_frame_size`` is not a positive integer.
    """

    __slots__ = ("_buffer", "_done", "_limit")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ValueError(f"max_frame_size must be a positive integer, got {max_frame_size!r}")
        self._limit = max_frame_size
        self._buffer = bytearray()
        self._done = False  # end of stream seen, or an error raised

    @property
    def max_frame_size(self) -> int:
        """The longest frame accepted, in bytes without the newline."""
        return self._limit

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held until its newline arrives (never above the limit)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next chunk of the stream; an empty one (``b""``) means the stream ended.

        :param data: bytes as read from the stream, any length: ``bytes``, or a ``bytearray`` or
            contiguous byte ``memoryview`` (such as a slice of a reused read buffer), which is
            copied before this returns and may be overwritten afterwards.
        :returns: the frames completed by this chunk, in order (often empty).
        :raises FrameTooLarge: a frame, or the partial frame held, passed ``max_frame_size``;
            ``exc.frames`` holds the whole frames before it.
        :raises TruncatedFrame: the stream ended (``b""``) with a partial frame held.
        :raises FramingError: data was fed after the end of stream or after an error.
        """
        if self._done:
            if data:
                raise FramingError("the frame decoder already saw the end of the stream or failed")
            return []
        if not data:
            return self._end()
        if type(data) is not bytes:
            # One copy of just what was read: bytes.split is then the fast path, and neither
            # frames nor the held remainder can alias the caller's buffer.
            data = bytes(data)
        limit = self._limit
        frames = data.split(_NL)
        buffer = self._buffer
        if buffer:
            size = len(buffer) + len(frames[0])
            if size > limit:
                self._fail(size, [])
            if len(frames) == 1:
                buffer += data
                return []
            frames[0] = b"".join((buffer, frames[0]))
            buffer.clear()
        rest = frames.pop()
        # A chunk no longer than the limit cannot hold a frame over it: skip the per-frame
        # check on the hot path (the tcp driver reads 64 KiB at most, the default limit 1 MiB).
        if len(data) > limit:
            for index, frame in enumerate(frames):
                if len(frame) > limit:
                    self._fail(len(frame), frames[:index])
            if len(rest) > limit:
                self._fail(len(rest), frames)
        if rest:
            buffer += rest
        return frames

    def _end(self) -> list[bytes]:
        self._done = True
        if self._buffer:
            size = len(self._buffer)
            self._buffer = bytearray()
            raise TruncatedFrame(size)
        return []

    def _fail(self, size: int, frames: list[bytes]) -> NoReturn:
        self._done = True
        self._buffer = bytearray()
        raise FrameTooLarge(size, self._limit, frames)


def encode_frame(data: bytes) -> bytes:
    """Make one frame of an encoded message: ``data`` and a newline.

    :param data: the message's compact JSON, as ``Message.to_bytes()`` gives it.
    :returns: the bytes to write to the stream.
    :raises MessageError: ``data`` holds a raw newline, which would split it into two frames.
    """
    if _NL in data:
        raise MessageError(
            "a frame cannot hold a raw newline; encode messages as compact JSON "
            "(Message.to_bytes())"
        )
    return data + _NL
