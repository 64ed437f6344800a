"""The reader link's fast path for XREADGROUP replies (pure): the same entries as the general
RESP parser gives, however the reply is cut into reads; anything unusual left to the general
parser."""

from __future__ import annotations

from distro_redis._resp import Decoder, Reply, pack_command
from distro_redis._streams_link import EntryDecoder
from hypothesis import given
from hypothesis import strategies as st


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def read_reply(key: bytes, entries: list[tuple[bytes, list[bytes] | None]]) -> bytes:
    """An XREADGROUP reply of one stream, as Redis writes it."""
    encoded = [
        array(
            bulk(entry_id), array(*(bulk(f) for f in fields)) if fields is not None else b"$-1\r\n"
        )
        for entry_id, fields in entries
    ]
    return array(array(bulk(key), array(*encoded)))


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Reply]:
    decoder = EntryDecoder()
    replies: list[Reply] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        replies += decoder.feed(data[last:cut])
        last = cut
    return replies


usual = st.lists(
    st.tuples(
        st.from_regex(rb"\A[0-9]{1,13}-[0-9]{1,3}\Z"),
        st.binary(max_size=12),
        st.binary(max_size=40),
    ),
    min_size=1,
    max_size=6,
)


@given(usual, st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_usual_entries_become_tuples_however_the_reply_is_cut(
    entries: list[tuple[bytes, bytes, bytes]], cuts: list[int]
) -> None:
    data = read_reply(b"p:distro.stream", [(i, [b"ch", c, b"msg", m]) for i, c, m in entries])
    cuts = [c for c in cuts if c < len(data)]
    assert feed_in_pieces(data, cuts) == [[[b"p:distro.stream", entries]]]


def test_unusual_entries_go_the_general_way() -> None:
    data = read_reply(
        b"k",
        [
            (b"1-0", [b"ch", b"/A.POST", b"msg", b"x"]),
            (b"2-0", [b"hello", b"world"]),
            (b"3-0", None),
        ],
    )
    general = Decoder().feed(data)
    assert EntryDecoder().feed(data) == general
    [[[_, entries]]] = general  # type: ignore[misc]
    assert entries[1] == [b"2-0", [b"hello", b"world"]]


def test_other_replies_are_untouched() -> None:
    data = b":3\r\n$-1\r\n-NOGROUP no such group\r\n" + pack_command(b"OK")
    assert EntryDecoder().feed(data) == Decoder().feed(data)
