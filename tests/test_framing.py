"""The frame decoder (distro_core.framing): pure code, tested as h11 tests its parser: on the
whole buffer, byte by byte, split at arbitrary points, and with trailing data; and against
:func:`reference`, a byte-at-a-time model of the specification (JSON objects until the first
newline, then lines)."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import messages

import distro_core as distro
from distro_core.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    FrameTooLarge,
    FramingError,
    TruncatedFrame,
    encode_frame,
)

frame_bodies = st.binary(max_size=64).map(lambda b: b.replace(b"\n", b""))

FIRST = b'{"id":"c0ffee","headers":{"uri":"/first"},"payload":null}'
"""A newline-delimited peer's first frame, a message: the object phase ends after it, and
arbitrary lines follow (a stream starting with arbitrary bytes is checked against the model)."""


def lines_after_first(frames: list[bytes]) -> bytes:
    return b"".join(encode_frame(f) for f in [FIRST, *frames])


def reference(stream: bytes, limit: int) -> tuple[list[bytes], str, int]:
    """What the whole stream decodes to, byte by byte: the frames, then ``"ok"``,
    ``"truncated"`` (with the bytes held at the end) or ``"too large"`` (with the size of the
    first frame over the limit; the frames are those before it)."""
    frames: list[bytes] = []
    depth, string, escape, start = 0, False, False, 0
    lines_from: int | None = None
    for at, byte in enumerate(stream):
        if not depth:  # outside an object
            if byte in b" \t\r":
                continue
            if byte == ord("{"):
                depth, start = 1, at
                continue
            lines_from = at + 1 if byte == ord("\n") else at
            break
        if byte == ord("\n"):  # a newline always ends a frame
            frames.append(stream[start:at])
            lines_from = at + 1
            break
        if escape:
            escape = False
        elif string:
            escape = byte == ord("\\")
            string = byte != ord('"')
        elif byte == ord('"'):
            string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if not depth:
                frames.append(stream[start : at + 1])
    if lines_from is None:
        tail = stream[start:] if depth else b""
    else:
        *lines, tail = stream[lines_from:].split(b"\n")
        frames += lines
    for index, frame in enumerate([*frames, tail]):
        if len(frame) > limit:
            return frames[:index], "too large", len(frame)
    return frames, ("truncated" if tail else "ok"), len(tail)


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        if chunk:  # b"" is end of stream, not an empty read
            frames.extend(decoder.feed(chunk))
    return frames


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# -- round trips -----------------------------------------------------------------------------


@given(st.lists(frame_bodies, max_size=30), st.lists(st.integers(min_value=0), max_size=40))
def test_frames_split_at_arbitrary_points_decode_to_the_originals(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = lines_after_first(frames)
    decoder = FrameDecoder()
    assert feed_all(decoder, split_at(stream, cuts)) == [FIRST, *frames]
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []


@given(st.lists(frame_bodies, max_size=12))
def test_frames_fed_byte_by_byte_decode_to_the_originals(frames: list[bytes]) -> None:
    stream = lines_after_first(frames)
    decoder = FrameDecoder()
    got = feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))])
    assert got == [FIRST, *frames]
    assert decoder.feed(b"") == []


def test_many_frames_in_one_chunk_come_out_in_order() -> None:
    frames = [b'{"n":%d}' % i for i in range(1000)]
    assert FrameDecoder().feed(b"".join(encode_frame(f) for f in frames)) == frames


def test_blank_lines_are_empty_frames() -> None:
    assert FrameDecoder().feed(FIRST + b"\n\n\na\n") == [FIRST, b"", b"", b"a"]


def test_before_the_first_newline_whitespace_between_objects_is_skipped() -> None:
    # The newline after an object only ends the object phase; so does a first blank line.
    assert FrameDecoder().feed(b' {"a":1} \t\r\n\nb\n') == [b'{"a":1}', b"", b"b"]
    assert FrameDecoder().feed(b"\n\na\n") == [b"", b"a"]


def test_a_partial_frame_waits_for_its_newline() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert decoder.buffered == 4
    assert decoder.feed(b":2") == []
    assert decoder.feed(b'}\n{"c":3}\n') == [b'{"b":2}', b'{"c":3}']
    assert decoder.buffered == 0


def test_frames_are_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"ab")
    [frame] = decoder.feed(b"c\n")
    assert type(frame) is bytes and frame == b"abc"


# -- a reused read buffer (feed_from) --------------------------------------------------------


def feed_through_buffer(decoder: FrameDecoder, chunks: list[bytes], size: int = 64) -> list[bytes]:
    """Feed the chunks through one read buffer of ``size`` bytes with ``feed_from``, scribbling
    over it after every call, as a driver reading with ``recv_into`` does (a chunk longer than
    the buffer is several reads). A FramingError's ``frames`` become all the frames before it."""
    buffer = bytearray(size)
    frames: list[bytes] = []
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            piece = chunk[start : start + size]
            buffer[: len(piece)] = piece
            try:
                frames.extend(decoder.feed_from(buffer, len(piece)))
            except FramingError as exc:
                exc.frames = frames + exc.frames
                raise
            buffer[:] = b"\n" * size  # what the next read would leave there
    return frames


@given(
    st.lists(frame_bodies, max_size=30),
    st.lists(st.integers(min_value=0), max_size=40),
    st.integers(min_value=1, max_value=100),
)
def test_a_reused_read_buffer_gives_copies_of_the_frames(
    frames: list[bytes], cuts: list[int], size: int
) -> None:
    stream = lines_after_first(frames)
    decoder = FrameDecoder()
    got = feed_through_buffer(decoder, split_at(stream, cuts), size)
    assert got == [FIRST, *frames]  # intact although the buffer was overwritten after each read
    assert all(type(frame) is bytes for frame in got)
    assert decoder.feed_from(bytearray(8), 0) == []  # nbytes 0 is the end of the stream


@settings(max_examples=500)
@given(
    st.lists(st.binary(max_size=120), max_size=20),
    st.integers(min_value=1, max_value=100),
    st.integers(min_value=1, max_value=150),
)
def test_a_reused_read_buffer_decodes_exactly_what_the_stream_holds(
    chunks: list[bytes], limit: int, size: int
) -> None:
    """The whole specification against the model (:func:`reference`): the frames in order, up
    to the first one over the limit (FrameTooLarge), then a partial last one (TruncatedFrame)."""
    check_against_reference(chunks, limit, size)


def check_against_reference(chunks: list[bytes], limit: int, size: int) -> None:
    frames, outcome, expected_size = reference(b"".join(chunks), limit)
    decoder = FrameDecoder(max_frame_size=limit)
    got: list[bytes] = []
    try:
        got = feed_through_buffer(decoder, chunks, size)
        decoder.feed_from(bytearray(1), 0)
    except FrameTooLarge as exc:
        assert outcome == "too large"
        assert limit < exc.size <= expected_size
        assert exc.frames == frames
    except TruncatedFrame as exc:
        assert outcome == "truncated"
        assert (got, exc.size) == (frames, expected_size)
    else:
        assert outcome == "ok"
        assert got == frames
    assert decoder.buffered == 0  # an error or the end lets go of what was held


# Bytes that matter to the object phase, so that random streams go through all its states; a
# newline (which ends the phase) or a byte that cannot start an object comes less often.
_SCANNED = st.lists(
    st.sampled_from(
        [
            b"{",
            b"}",
            b"[",
            b"]",
            b'"',
            b"\\",
            b" ",
            b'"x"',
            b"{",
            b'"',
            b"\\",
            b"\\\\",
            b"\n",
            b"\r",
            b"a",
        ]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=1000)
@given(
    st.sampled_from([b"", b"{", b'{"', b' {"a":[']),
    st.lists(_SCANNED, max_size=8),
    st.integers(min_value=1, max_value=40),
    st.integers(min_value=1, max_value=30),
)
def test_streams_of_brackets_quotes_and_escapes_decode_as_the_model_says(
    start: bytes, chunks: list[bytes], limit: int, size: int
) -> None:
    check_against_reference([start, *chunks], limit, size)


TRICKY = [
    b'{"a":"\\"}{\\\\"}{"b":"\\\\"}\n{"c":1}{"d":2}\n',
    b'{"a":"\\\n"}',
    b' {"a":[{"b":"]}"}]}\r\n{"c":"\\u00e9"}\n\n',
    b'{"a":1} x{"b":2}\n{"c"',
]


@pytest.mark.parametrize("stream", TRICKY)
def test_every_cut_in_two_or_three_decodes_as_the_model_says(stream: bytes) -> None:
    for first, second in itertools.combinations_with_replacement(range(len(stream) + 1), 2):
        chunks = [stream[:first], stream[first:second], stream[second:]]
        for limit in (8, 1000):
            check_against_reference(chunks, limit, 1000)


def test_the_model_is_the_specification() -> None:
    """A few streams by hand, so that the model itself is checked."""
    assert reference(b'{"a":"}"}{"b":[{}]}', 100) == ([b'{"a":"}"}', b'{"b":[{}]}'], "ok", 0)
    assert reference(b'{"a":"\\"}"}\n', 100) == ([b'{"a":"\\"}"}'], "ok", 0)
    assert reference(b'{"a":\n{"b":1}{"c":2}\n', 100) == (
        [b'{"a":', b'{"b":1}{"c":2}'],
        "ok",
        0,
    )
    assert reference(b'x{"a":1}\n{"b"', 100) == ([b'x{"a":1}'], "truncated", 4)
    assert reference(b'{"a":1} {"b":', 100) == ([b'{"a":1}'], "truncated", 5)
    assert reference(b'{"a":1}{"bb":2}', 7) == ([b'{"a":1}'], "too large", 8)


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=200), max_size=20),
    st.integers(min_value=1, max_value=300),
    st.sampled_from([bytearray, memoryview]),
)
def test_bytearray_and_memoryview_chunks_decode_exactly_as_bytes_do(
    chunks: list[bytes], limit: int, kind: type[bytearray] | type[memoryview]
) -> None:
    def outcome(
        wrap: type[bytes] | type[bytearray] | type[memoryview],
    ) -> tuple[str, list[bytes], int | None, int]:
        decoder = FrameDecoder(max_frame_size=limit)
        frames: list[bytes] = []
        try:
            for chunk in chunks:
                if chunk:
                    frames.extend(decoder.feed(wrap(chunk)))
            decoder.feed(b"")
        except FrameTooLarge as exc:
            return ("too large", frames + exc.frames, exc.size, decoder.buffered)
        except TruncatedFrame as exc:
            return ("truncated", frames, exc.size, decoder.buffered)
        return ("ok", frames, None, decoder.buffered)

    got = outcome(kind)
    assert got == outcome(bytes)
    assert all(type(frame) is bytes for frame in got[1])


def test_a_partial_frame_is_copied_out_of_the_fed_buffer() -> None:
    decoder = FrameDecoder()
    buffer = bytearray(b'{"a":1}\n{"b"')
    assert decoder.feed(memoryview(buffer)) == [b'{"a":1}']
    buffer[:] = b"XXXXXXXXXXXX"
    assert decoder.feed(bytearray(b":2}\n")) == [b'{"b":2}']


def test_long_frames_through_a_small_read_buffer_between_short_ones() -> None:
    long = bytes(range(256)).replace(b"\n", b"") * 1200  # 306,000 bytes, not one newline
    frames = [b"a", long, b"b", long[:70_000], long, b""]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    assert feed_through_buffer(decoder, [stream], size=65536) == frames
    assert feed_through_buffer(FrameDecoder(), [stream[:7], stream[7:]], size=1000) == frames


@pytest.mark.parametrize("size", [1, 10, 11, 4096])
def test_feed_from_enforces_the_limit_exactly(size: int) -> None:
    exact = b"x" * 10
    assert feed_through_buffer(FrameDecoder(10), [exact + b"\n"], size) == [exact]
    with pytest.raises(FrameTooLarge) as info:
        feed_through_buffer(FrameDecoder(10), [b"ok\n" + exact + b"y\n"], size)
    assert info.value.size == 11
    assert info.value.frames == [b"ok"]


@pytest.mark.parametrize("nbytes", [-1, 9])
def test_feed_from_refuses_a_count_outside_the_buffer(nbytes: int) -> None:
    with pytest.raises(ValueError, match="nbytes"):
        FrameDecoder().feed_from(bytearray(8), nbytes)


def test_feed_from_after_the_end_is_an_error() -> None:
    decoder = FrameDecoder()
    assert decoder.feed_from(bytearray(b"a\n"), 2) == [b"a"]
    assert decoder.feed_from(bytearray(b"a\n"), 0) == []
    with pytest.raises(FramingError, match="end of the stream"):
        decoder.feed_from(bytearray(b"a\n"), 2)


# -- end of stream ---------------------------------------------------------------------------


@given(st.lists(frame_bodies, max_size=10), st.binary(min_size=1, max_size=50))
def test_trailing_partial_data_is_reported_at_end_of_stream(
    frames: list[bytes], tail: bytes
) -> None:
    tail = tail.replace(b"\n", b"") or b"x"
    decoder = FrameDecoder()
    stream = lines_after_first(frames) + tail
    assert decoder.feed(stream) == [FIRST, *frames]
    with pytest.raises(TruncatedFrame) as info:
        decoder.feed(b"")
    assert info.value.size == len(tail)
    assert isinstance(info.value, distro.MessageError)
    assert decoder.feed(b"") == []  # end of stream twice is still just the end


def test_data_after_end_of_stream_is_an_error() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    with pytest.raises(FramingError, match="end of the stream"):
        decoder.feed(b"a\n")


# -- size limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
def test_a_frame_of_exactly_the_limit_passes_and_one_more_byte_fails(split: bool) -> None:
    limit = 100
    decoder = FrameDecoder(max_frame_size=limit)
    exact = b"x" * limit
    chunks = [exact[:30], exact[30:] + b"\n"] if split else [exact + b"\n"]
    assert feed_all(decoder, chunks) == [exact]
    over = b"y" * (limit + 1)
    decoder = FrameDecoder(max_frame_size=limit)
    with pytest.raises(FrameTooLarge) as info:
        feed_all(decoder, [over[:30], over[30:] + b"\n"] if split else [over + b"\n"])
    assert (info.value.size, info.value.limit) == (limit + 1, limit)
    assert str(limit) in str(info.value)


def test_a_partial_frame_at_the_limit_waits_and_one_byte_more_fails() -> None:
    decoder = FrameDecoder(max_frame_size=10)
    assert decoder.feed(b"a" * 10) == []
    assert decoder.buffered == 10
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"a")


def test_frames_before_an_oversized_one_are_handed_over_with_the_error() -> None:
    decoder = FrameDecoder(max_frame_size=8)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(b"one\ntwo\n" + b"z" * 20 + b"\nthree\n")
    assert info.value.frames == [b"one", b"two"]
    with pytest.raises(FramingError):
        decoder.feed(b"more\n")  # an error is terminal, as in h11
    assert decoder.feed(b"") == []


def test_a_long_stream_without_newline_never_buffers_past_the_limit() -> None:
    limit = 64 * 1024
    decoder = FrameDecoder(max_frame_size=limit)
    chunk = b"x" * 4096
    fed = 0
    with pytest.raises(FrameTooLarge):
        while fed < 10 * 1024 * 1024:
            decoder.feed(chunk)
            fed += len(chunk)
            assert decoder.buffered <= limit
    assert fed <= limit  # it failed as soon as the limit was passed
    assert decoder.buffered == 0


def test_the_default_limit_is_one_mebibyte() -> None:
    decoder = FrameDecoder()
    assert decoder.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 1_048_576
    assert decoder.feed(b"a" * DEFAULT_MAX_FRAME_SIZE + b"\n") == [b"a" * DEFAULT_MAX_FRAME_SIZE]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_a_bad_limit_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=bad)  # type: ignore[arg-type]


# -- arbitrary input -------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=200), max_size=20),
    st.integers(min_value=1, max_value=300),
)
def test_arbitrary_bytes_raise_only_framing_errors_and_lose_nothing(
    chunks: list[bytes], limit: int
) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    stream = b"".join(chunks)
    frames, outcome, _ = reference(stream, limit)
    got: list[bytes] = []
    try:
        for chunk in chunks:
            if chunk:
                got += decoder.feed(chunk)
        decoder.feed(b"")
    except FrameTooLarge as exc:
        got.extend(exc.frames)
        assert exc.size > limit
        assert outcome == "too large"
    except TruncatedFrame as exc:
        assert stream[len(stream) - exc.size :].count(b"\n") == 0
        assert outcome == "truncated"
    else:
        assert outcome == "ok"
    # Whatever came out is the model's frames, each within the limit.
    assert got == frames
    assert all(len(frame) <= limit for frame in got)
    assert decoder.buffered <= limit


# -- encoding --------------------------------------------------------------------------------


def test_encode_frame_adds_the_newline() -> None:
    msg = distro.message({"uri": "/a", "verb": "POST"}, {"text": "two\nlines"})
    data = msg.to_bytes()
    assert encode_frame(data) == data + b"\n"
    assert FrameDecoder().feed(encode_frame(data)) == [data]


def test_encode_frame_refuses_a_raw_newline() -> None:
    with pytest.raises(distro.MessageError, match="newline"):
        encode_frame(b'{"a":\n1}')


@given(st.text(max_size=50), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
def test_encoded_messages_never_hold_a_raw_newline(text: str, n: int, x: float) -> None:
    try:
        msg = distro.message(
            {"uri": "/t", "verb": "POST", "x-h": text}, {"s": text, "n": n, "x": x}
        )
    except distro.MessageError:
        return  # lone surrogates and the like cannot be messages at all
    frame = encode_frame(msg.to_bytes())
    assert frame.count(b"\n") == 1
    assert distro.parse(FrameDecoder().feed(frame)[0]) == msg


# -- the JavaScript original's stream: objects without a newline -----------------------------


def js_stringify(msg: distro.Message) -> bytes:
    """What the original's client writes for a message: ``JSON.stringify({id, headers,
    payload})``, compact, with nothing after it."""
    fields = {"id": msg.id, "headers": dict(msg.headers), "payload": msg.payload}
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=200)
@given(
    st.lists(messages(), min_size=1, max_size=4),
    st.lists(st.sampled_from([b"", b" ", b"\r", b"\t "]), min_size=4, max_size=4),
    st.lists(st.integers(min_value=0), max_size=30),
    st.integers(min_value=1, max_value=100),
)
def test_messages_as_the_original_writes_them_decode_however_the_stream_is_cut(
    msgs: list[distro.Message], gaps: list[bytes], cuts: list[int], size: int
) -> None:
    stream = b"".join(gap + js_stringify(msg) for gap, msg in zip(gaps, msgs, strict=False))
    decoder = FrameDecoder()
    frames = feed_through_buffer(decoder, split_at(stream, cuts), size)
    assert [distro.parse(frame) for frame in frames] == msgs
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []  # nothing held: the connection may end, or stay open


def test_a_one_mebibyte_message_one_byte_per_read_costs_linear_time() -> None:
    """Each byte is examined once, not the whole held buffer on every read: a quadratic
    decoder would take 16 times as long for 4 times the bytes (and hours for 1 MiB)."""

    def message(size: int) -> bytes:
        head = b'{"id":"big","headers":{"uri":"/a"},"payload":"'
        room = size - len(head) - 2
        body = b'\\"{[}]\\\\ x' * (room // 10)  # every kind of byte the scanner stops at
        return head + body + b"x" * (room - len(body)) + b'"}'

    def one_byte_per_read(data: bytes) -> float:
        decoder = FrameDecoder()
        buffer = bytearray(1)
        frames: list[bytes] = []
        started = time.perf_counter()
        for byte in data:
            buffer[0] = byte
            frames += decoder.feed_from(buffer, 1)
            assert decoder.buffered <= DEFAULT_MAX_FRAME_SIZE
        took = time.perf_counter() - started
        assert frames == [data]
        assert json.loads(data)["id"] == "big"
        return took

    big = message(DEFAULT_MAX_FRAME_SIZE)
    assert len(big) == DEFAULT_MAX_FRAME_SIZE
    small = message(DEFAULT_MAX_FRAME_SIZE // 4)
    quarter = min(one_byte_per_read(small) for _ in range(2))
    whole = one_byte_per_read(big)
    assert whole < 8 * quarter, (whole, quarter)
    assert whole < 60.0
