"""Length-prefixed framing: a frame is a 4-byte big-endian length, then that many bytes. Pure.

The decoder is fed whatever the socket read (any split of the stream: half a header, three
frames and a bit) and gives back the whole frames in it. A frame whose header announces more
than the limit is never buffered: the decoder reports it and skips its bytes as they come, so a
peer cannot make the reader hold more than one legal frame.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["HEADER_SIZE", "FrameDecoder", "Oversized", "encode"]

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size


class Oversized(NamedTuple):
    """A frame the decoder skipped because its header announced more than the limit.

    :ivar size: the announced size in bytes.
    """

    size: int


def encode(frame: bytes) -> bytes:
    """Return ``frame`` with its length header in front.

    :raises ValueError: the frame is too long for a 4-byte length.
    """
    if len(frame) > 0xFFFFFFFF:
        raise ValueError(f"a frame of {len(frame)} bytes does not fit a 4-byte length")
    return _HEADER.pack(len(frame)) + frame


class FrameDecoder:
    """Splits a byte stream into frames.

    :param max_size: the largest frame accepted; larger ones come out as :class:`Oversized`.
    """

    __slots__ = ("_buffer", "_max_size", "_skip")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buffer = bytearray()
        self._skip = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held or still to skip (non-zero at EOF: cut off)."""
        return len(self._buffer) + self._skip

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        """Take the next bytes of the stream; return the frames completed by them, in order."""
        if self._skip:
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        buffer = self._buffer
        buffer += data
        out: list[bytes | Oversized] = []
        start = 0
        end = len(buffer)
        while end - start >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > self._max_size:
                out.append(Oversized(size))
                body = min(size, end - start - HEADER_SIZE)
                self._skip = size - body
                start += HEADER_SIZE + body
                continue
            if end - start - HEADER_SIZE < size:
                break
            start += HEADER_SIZE
            out.append(bytes(buffer[start : start + size]))
            start += size
        if start:
            del buffer[:start]
        return out
