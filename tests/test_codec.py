"""The JSON codec: orjson when installed, the standard library otherwise, byte-for-byte the same.

``distro_core._codec`` is private; it is tested directly because the two backends must agree on
every value, which the public API cannot show on its own. The vectors run under both backends in
test_vectors.py.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import assert_same_json, canonical_json, floats, integers, json_values

from distro_core import _codec
from distro_core._codec import CodecError, dumps, loads, stdlib_dumps, stdlib_loads

orjson = pytest.importorskip("orjson")

BOTH_DUMPS = pytest.mark.parametrize("encode", [dumps, stdlib_dumps], ids=["dumps", "stdlib"])
BOTH_LOADS = pytest.mark.parametrize("decode", [loads, stdlib_loads], ids=["loads", "stdlib"])


def test_orjson_is_the_backend_when_installed() -> None:
    assert _codec.BACKEND == "orjson"
    assert dumps is not stdlib_dumps
    assert loads is not stdlib_loads


# -- encoding --------------------------------------------------------------------------------


@settings(max_examples=300)
@given(json_values)
def test_both_encoders_write_the_canonical_bytes(value: Any) -> None:
    expected = canonical_json(value).encode("utf-8")
    assert dumps(value) == expected
    assert stdlib_dumps(value) == expected


@settings(max_examples=1000)
@given(floats)
@example(1.5e-5)
@example(-2.5e-7)
@example(1e-10)
@example(9.999999999999999e-5)
def test_a_float_is_written_in_its_shortest_exact_form_by_both(number: float) -> None:
    written = dumps(number)
    assert written == stdlib_dumps(number)
    back = float(written)
    assert back == number and math.copysign(1.0, back) == math.copysign(1.0, number)
    assert written == canonical_json(number).encode()


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (100.0, "100.0"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e+16"),
        (1.5e17, "1.5e+17"),
        (1e21, "1e+21"),
        (1e308, "1e+308"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (1e-4, "0.0001"),
        (1e-5, "0.00001"),
        (-1.5e-5, "-0.000015"),
        (9.999e-5, "0.00009999"),
        (1e-6, "1e-6"),
        (-1.234e-7, "-1.234e-7"),
        (1e-9, "1e-9"),
        (1e-10, "1e-10"),
        (5e-324, "5e-324"),
        (2.2250738585072014e-308, "2.2250738585072014e-308"),
    ],
)
@BOTH_DUMPS
def test_float_formatting(encode: Any, number: float, text: str) -> None:
    assert encode(number) == text.encode()
    assert encode([number, {"k": number}]) == f'[{text},{{"k":{text}}}]'.encode()


@BOTH_DUMPS
def test_strings_that_look_like_floats_are_left_alone(encode: Any) -> None:
    value = {"1.5e-05": '1e-07 "2e-08" \\ 3e-09', "n": 1.5e-5}
    assert encode(value) == b'{"1.5e-05":"1e-07 \\"2e-08\\" \\\\ 3e-09","n":0.000015}'


@pytest.mark.parametrize(
    "number",
    [
        *(2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64)),
        *(10**19 - 1, -(10**19 - 1), 10**19, 2**200, -(2**100), 10**4000),
    ],
)
@BOTH_DUMPS
def test_integers_are_written_exactly(encode: Any, number: int) -> None:
    assert encode(number) == str(number).encode()
    assert encode({"n": [number]}) == f'{{"n":[{number}]}}'.encode()


@pytest.mark.parametrize(
    ("text", "json_text"),
    [
        ("é日本😀𝄞", '"é日本😀𝄞"'),
        ('"', '"\\""'),
        ("\\", '"\\\\"'),
        ("/", '"/"'),
        ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\x7f\x80\u2028\u2029\ufeff\uffff", '"\x7f\x80\u2028\u2029\ufeff\uffff"'),
    ],
)
@BOTH_DUMPS
def test_strings_are_escaped_as_json_stringify_escapes_them(
    encode: Any, text: str, json_text: str
) -> None:
    assert encode(text) == json_text.encode("utf-8")


def test_every_character_is_written_the_same_by_both() -> None:
    chars = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert dumps(chars) == stdlib_dumps(chars) == canonical_json(chars).encode("utf-8")


def _circular() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize("value", [float("nan"), [float("inf")], {"a": float("-inf")}])
def test_nan_and_infinity_never_survive_encoding(value: Any) -> None:
    with pytest.raises(CodecError, match="not JSON compliant"):
        stdlib_dumps(value)
    # orjson writes null instead; the round trip message() makes shows the difference.
    assert loads(dumps(value)) != value


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {"s": "\ud800"},
        {"\udc00": 1},
        _circular(),
        {1j: 1},
    ],
    ids=["object", "surrogate", "surrogate-key", "circular", "complex-key"],
)
@BOTH_DUMPS
def test_what_json_cannot_hold_is_a_codec_error(encode: Any, value: Any) -> None:
    with pytest.raises(CodecError):
        encode(value)


def test_a_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


# -- decoding --------------------------------------------------------------------------------


@settings(max_examples=300)
@given(json_values)
def test_both_decoders_read_back_exactly_what_was_written(value: Any) -> None:
    data = dumps(value)
    for decode in (loads, stdlib_loads):
        assert_same_json(decode(data), value)
        assert_same_json(decode(data.decode("utf-8")), value)


@given(integers)
def test_integers_are_read_exactly_by_both(number: int) -> None:
    for text in (str(number), f"[{number}]", f'{{"n":{number}}}'):
        for decode in (loads, stdlib_loads):
            value = decode(text.encode())
            assert_same_json(value, json.loads(text))


_NUMBER_TEXT = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z", fullmatch=True
)


@settings(max_examples=1000)
@given(_NUMBER_TEXT)
@example("-9223372036854775809")
@example("-9999999999999999999")
@example("18446744073709551616")
@example("1.7976931348623157e308")
@example("1.7976931348623159e308")
@example("2.4703282292062328e-324")
@example("2.4703282292062327e-324")
@example("1e-400")
def test_both_decoders_read_any_number_the_same(text: str) -> None:
    outcomes = []
    for decode in (loads, stdlib_loads):
        for data in (text.encode(), text):
            outcomes.append(_outcome(decode, data))
            wrapped = _outcome(decode, b"[" + text.encode() + b"]")
            outcomes.append(("value", wrapped[1][1:-1]) if wrapped[0] == "value" else wrapped)
    assert len(set(outcomes)) == 1, outcomes
    expected = float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(expected, float) and math.isinf(expected):
        assert outcomes[0][0] == "error"
    else:
        assert outcomes[0] == ("value", repr(expected))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b"nul",
        b"NaN",
        b"-NaN",
        b"Infinity",
        b"-Infinity",
        b"[NaN]",
        b"1e400",
        b"-1e400",
        b'{"a":[1E999]}',
        b'"\\ud800"',
        b'"\\udfff"',
        b'"\\udc00\\ud800"',
        b'"\\ud800x"',
        b"\xef\xbb\xbf{}",
        b"\xff",
        b'"\xc3"',
        b'"\xed\xa0\x80"',
        b'"\xc0\xaf"',
        b"{} {}",
        b"[1,]",
        b"{'a':1}",
        b"01",
        b"+1",
        b".5",
        b"1.",
        b'"\x01"',
        b"[1] // comment",
        b"1" * 5000,
        b"[" * 100_000,
    ],
)
@BOTH_LOADS
def test_what_is_not_json_is_a_codec_error(decode: Any, data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    with pytest.raises(CodecError):
        decode(text)


@BOTH_LOADS
def test_text_holding_a_lone_surrogate_is_a_codec_error(decode: Any) -> None:
    # Only a str can hold one; bytes cannot, so this is text passed in directly.
    for text in ('"\ud800"', '{"n":' + "1" * 30 + ',"s":"\udc80"}'):
        with pytest.raises(CodecError, match="surrogate"):
            decode(text)


@BOTH_LOADS
def test_valid_escapes_and_whitespace_are_read(decode: Any) -> None:
    data = b' \r\n\t{"a" : "\\u00e9\\ud83d\\ude00\\/\\u0000" , "b":[ 1 , -0 , -0.0 ]}\n'
    value = decode(data)
    assert_same_json(value, {"a": "é😀/\x00", "b": [1, 0, -0.0]})


@BOTH_LOADS
def test_duplicate_keys_keep_the_last(decode: Any) -> None:
    assert decode(b'{"a":1,"b":2,"a":3}') == {"a": 3, "b": 2}


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_both_decoders_agree_on_any_bytes(data: bytes) -> None:
    assert _outcome(loads, data) == _outcome(stdlib_loads, data)


@settings(max_examples=300)
@given(json_values, st.data())
def test_both_decoders_agree_on_damaged_json(value: Any, data: st.DataObject) -> None:
    text = dumps(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    insert = data.draw(st.binary(max_size=3))
    damaged = text[:cut] + insert + text[cut + data.draw(st.integers(0, 2)) :]
    assert _outcome(loads, damaged) == _outcome(stdlib_loads, damaged)


def _outcome(decode: Any, data: bytes | str) -> tuple[str, str]:
    try:
        return "value", repr(decode(data))
    except CodecError:
        return "error", ""


# -- without orjson --------------------------------------------------------------------------

_WITHOUT_ORJSON = r"""
import json, sys
sys.modules["orjson"] = None  # makes "import orjson" fail, as if it were not installed
import distro_core as distro
from distro_core import _codec
assert _codec.BACKEND == "json", _codec.BACKEND
assert _codec.dumps is _codec.stdlib_dumps and _codec.loads is _codec.stdlib_loads
values = json.loads(sys.stdin.read())
out = []
for value in values:
    msg = distro.message({"uri": "/a", "verb": "post"}, value, id="x")
    assert distro.parse(msg.to_bytes()) == msg
    out.append(msg.to_bytes().decode("utf-8"))
print(json.dumps(out))
"""


def test_without_orjson_the_standard_library_gives_the_same_bytes() -> None:
    values = [
        *(1.5e-5, -2.5e-7, 1e16, 1e-10, 5e-324, -0.0, 1.0, 2**70, -(2**63) - 1),
        *("é😀\u2028\x00", [1, {"a": [0.000123, 1e-5]}], {"k": "1e-05"}),
    ]
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ORJSON],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    import distro_core as distro

    expected = [
        distro.message({"uri": "/a", "verb": "post"}, value, id="x").to_string() for value in values
    ]
    assert json.loads(result.stdout) == expected
