"""The RESP decoder (pure): whole buffers, split anywhere, byte by byte, and garbage."""

from __future__ import annotations

from typing import Any

import pytest
from distro_redis._resp import (
    MAX_DEPTH,
    MAX_LINE,
    Decoder,
    ProtocolError,
    ReplyError,
    pack_command,
    publish_head,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def encode(value: Any) -> bytes:
    """RESP2 bytes for a decoded value (the test's own encoder, written from the spec)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, ReplyError):
        return b"-" + value.message.encode() + b"\r\n"
    if isinstance(value, bool):
        raise TypeError("no booleans in RESP2")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)
    raise TypeError(type(value))


error_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30
)
replies = st.recursive(
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.binary(max_size=64)
    | error_text.map(ReplyError),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


def feed_all(pieces: list[bytes]) -> list[Any]:
    decoder = Decoder()
    out: list[Any] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    return out


@given(st.lists(replies, max_size=8))
def test_a_whole_buffer_decodes_to_the_replies(values: list[Any]) -> None:
    assert feed_all([b"".join(encode(v) for v in values)]) == values


@given(st.lists(replies, min_size=1, max_size=6), st.data())
def test_replies_split_at_arbitrary_points_decode_the_same(values: list[Any], data: Any) -> None:
    wire = b"".join(encode(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert feed_all(pieces) == values


@settings(max_examples=30)
@given(st.lists(replies, min_size=1, max_size=3))
def test_replies_fed_byte_by_byte_decode_the_same(values: list[Any]) -> None:
    wire = b"".join(encode(v) for v in values)
    assert feed_all([wire[i : i + 1] for i in range(len(wire))]) == values


pushes = st.one_of(
    st.tuples(st.just(b"message"), st.binary(max_size=20), st.binary(max_size=80)),
    st.tuples(
        st.just(b"pmessage"), st.binary(max_size=10), st.binary(max_size=20), st.binary(max_size=80)
    ),
).map(list)


@given(st.lists(pushes | replies, min_size=1, max_size=8), st.data())
def test_pubsub_pushes_split_anywhere_take_the_fast_path_or_wait(
    values: list[Any], data: Any
) -> None:
    wire = b"".join(encode(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    assert feed_all(pieces) == values


def test_a_pubsub_push_with_trailing_data_waits_for_the_rest() -> None:
    push = encode([b"message", b"/A.GET", b'{"id":"1"}'])
    decoder = Decoder()
    assert decoder.feed(push + push[:7]) == [[b"message", b"/A.GET", b'{"id":"1"}']]
    assert decoder.feed(push[7:]) == [[b"message", b"/A.GET", b'{"id":"1"}']]


def test_a_large_bulk_string_is_collected_across_many_reads() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = encode([b"message", b"/BIG.POST", payload]) + encode(7)
    pieces = [wire[i : i + 1000] for i in range(0, len(wire), 1000)]
    assert feed_all(pieces) == [[b"message", b"/BIG.POST", payload], 7]


def test_simple_strings_and_resp3_pushes_and_nulls() -> None:
    decoder = Decoder()
    wire = b"+PONG\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n_\r\n*-1\r\n"
    assert decoder.feed(wire) == [b"PONG", [b"message", b"a", b"b"], None, None]


def test_commands_are_arrays_of_bulk_strings() -> None:
    wire = b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"
    assert pack_command(b"SUBSCRIBE", b"a", b"bc") == wire
    head = publish_head(b"/CUSTOMER/7.POST")
    data = b'{"id":"x"}'
    command = head + b"$%d\r\n%b\r\n" % (len(data), data)
    assert Decoder().feed(command) == [[b"PUBLISH", b"/CUSTOMER/7.POST", data]]


@pytest.mark.parametrize(
    "garbage",
    [
        b"?what\r\n",
        b":12x\r\n",
        b"$abc\r\n",
        b"$3\r\nabcXY",
        b"*3\r\n$7\r\nmessage\r\n$x1\r\n",
        b"*4\r\n$8\r\npmessage\r\n$1\r\na\r\n$1\r\nbXX",
        b"*1\r\n" * (MAX_DEPTH + 2) + b":1\r\n",
        b"x" * (MAX_LINE + 10),
    ],
)
def test_what_is_not_resp_raises_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(garbage)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_replies_or_protocol_error_only(junk: bytes) -> None:
    decoder = Decoder()
    try:
        decoder.feed(junk)
        decoder.feed(junk)
    except ProtocolError:
        pass
