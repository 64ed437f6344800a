"""The Message: making one, its field rules, its wire form and parsing it back.

Everything goes through the public API; the byte-level vectors are in test_vectors.py and the JSON
codec itself in test_codec.py.
"""

from __future__ import annotations

import json
import os
import types
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    any_text,
    assert_same_json,
    canonical_json,
    headers,
    json_values,
    messages,
    verbs_any_case,
    wire_objects,
)

import distro_core as distro

ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def raises_message_error(*match: str) -> Any:
    """``pytest.raises(MessageError)`` that also checks the text names every part of ``match``."""

    class _Check:
        def __enter__(self) -> None:
            self._ctx = pytest.raises(distro.MessageError)
            self._info = self._ctx.__enter__()

        def __exit__(self, *exc: Any) -> bool:
            handled = self._ctx.__exit__(*exc)
            text = str(self._info.value)
            for part in match:
                assert part in text, f"{part!r} not in error text {text!r}"
            return bool(handled)

    return _Check()


# -- ids -------------------------------------------------------------------------------------


def test_a_fresh_id_is_a_canonical_uuid4_string() -> None:
    for _ in range(1000):
        msg = distro.message({"uri": "/a"})
        assert type(msg.id) is str
        parsed = uuid.UUID(msg.id)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == msg.id  # lower-case, hyphenated, 36 characters


def test_ids_are_unique_and_use_every_random_digit() -> None:
    ids = [distro.message({"uri": "/a"}).id for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    # Each of the 30 random hex digits takes all 16 values (a stuck digit would show here); digit
    # 12 is the version (always 4) and digit 16 carries the variant (8, 9, a or b).
    hex_ids = [i.replace("-", "") for i in ids]
    for position in range(32):
        seen = {h[position] for h in hex_ids}
        if position == 12:
            assert seen == {"4"}
        elif position == 16:
            assert seen == set("89ab")
        else:
            assert len(seen) == 16, (position, seen)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    distro.message({"uri": "/warm-up"})  # the parent has buffered randomness now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, distro.message({"uri": "/child"}).id.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        _, status = os.waitpid(pid, 0)
        child_id = os.read(read_end, 100).decode()
    finally:
        os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert uuid.UUID(child_id).version == 4
    assert child_id != distro.message({"uri": "/parent"}).id


def test_an_explicit_id_is_used() -> None:
    assert distro.message({"uri": "/a"}, id="replayed-1").id == "replayed-1"


@pytest.mark.parametrize("bad", ["", 1, b"id", ["id"]])
def test_an_explicit_id_must_be_a_non_empty_string(bad: Any) -> None:
    with raises_message_error("id"):
        distro.message({"uri": "/a"}, id=bad)


# -- headers ---------------------------------------------------------------------------------


def test_headers_and_payload_are_kept_and_nothing_is_added() -> None:
    head = {"uri": "/customer/7", "x-trace": [1, {"deep": None}], "replyTo": "somewhere"}
    msg = distro.message(head, {"total": 12})
    assert msg.headers == head
    assert list(msg.headers) == list(head)
    assert msg.payload == {"total": 12}
    assert distro.message({"uri": "/a"}).headers == {"uri": "/a"}
    assert distro.message({"uri": "/a"}).payload is None


def test_a_mapping_that_is_not_a_dict_is_accepted() -> None:
    msg = distro.message(types.MappingProxyType({"uri": "/a", "verb": "get"}))
    assert msg.headers == {"uri": "/a", "verb": "GET"}


@pytest.mark.parametrize("bad", [None, [("uri", "/a")], "uri=/a", 3])
def test_headers_must_be_a_mapping(bad: Any) -> None:
    with raises_message_error("headers"):
        distro.message(bad)


@pytest.mark.parametrize(
    "head", [{}, {"uri": ""}, {"uri": None}, {"uri": 7}, {"uri": b"/a"}, {"uri": ["/a"]}]
)
def test_uri_must_be_a_non_empty_string(head: dict[str, Any]) -> None:
    with raises_message_error("headers['uri']", "non-empty string"):
        distro.message(head)


def test_message_error_is_a_value_error_and_a_distro_error() -> None:
    with pytest.raises(ValueError):
        distro.message({})
    with pytest.raises(distro.DistroError):
        distro.message({})


@given(verbs_any_case())
def test_a_verb_in_any_case_is_stored_upper_case(verb: str) -> None:
    msg = distro.message({"uri": "/a", "verb": verb})
    assert msg.verb == msg.headers["verb"] == verb.upper()
    assert distro.parse(msg.to_bytes()).verb == verb.upper()
    raw = json.dumps({"id": ID, "headers": {"uri": "/a", "verb": verb}})
    assert distro.parse(raw).verb == verb.upper()


@pytest.mark.parametrize(
    "verb",
    [
        "CONNECT",
        "OPTIONS",
        "",
        " GET",
        "GET ",
        "G ET",
        "po\u017ft",
        "\uff27\uff25\uff34",
        1,
        True,
        ["GET"],
        {},
    ],
)
def test_other_verbs_are_refused(verb: Any) -> None:
    with raises_message_error("headers['verb']", "GET"):
        distro.message({"uri": "/a", "verb": verb})
    raw = json.dumps({"id": ID, "headers": {"uri": "/a", "verb": verb}})
    with raises_message_error("headers['verb']", ID):
        distro.parse(raw)


def test_a_null_verb_is_no_verb() -> None:
    msg = distro.message({"uri": "/a", "verb": None})
    assert msg.verb is None
    assert msg.headers == {"uri": "/a", "verb": None}
    assert distro.message({"uri": "/a"}).verb is None


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_address_and_port_are_kept(port: int) -> None:
    msg = distro.message({"uri": "/a", "address": "127.0.0.1", "port": port})
    assert msg.headers == {"uri": "/a", "address": "127.0.0.1", "port": port}


@pytest.mark.parametrize("address", [1, None, ["127.0.0.1"], {"host": "x"}, b"127.0.0.1"])
def test_address_must_be_a_string(address: Any) -> None:
    with raises_message_error("headers['address']", "string"):
        distro.message({"uri": "/a", "address": address})


@pytest.mark.parametrize("port", [0, 65536, -1, True, 80.0, "80", None, 2**70, [80]])
def test_port_must_be_an_integer_in_range(port: Any) -> None:
    with raises_message_error("headers['port']", "1..65535"):
        distro.message({"uri": "/a", "port": port})
    raw = json.dumps({"id": ID, "headers": {"uri": "/a", "port": port}})
    with raises_message_error("headers['port']"):
        distro.parse(raw)


def test_other_headers_may_hold_any_json_value() -> None:
    head = {"uri": "/a", "n": 2**80, "f": -0.0, "list": [None, True], "o": {"é": "😀"}}
    msg = distro.message(head)
    assert_same_json(msg.headers, head)
    assert_same_json(distro.parse(msg.to_bytes()).headers, head)


# -- payload ---------------------------------------------------------------------------------


def _circular_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _circular_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": []}
    value["a"].append({"up": value})
    return value


@pytest.mark.parametrize(
    ("payload", "where", "what"),
    [
        ({"a": [1, 2, float("nan")]}, "payload['a'][2]", "nan"),
        ([float("inf")], "payload[0]", "inf"),
        ({"x": {"y": float("-inf")}}, "payload['x']['y']", "-inf"),
        (float("nan"), "payload", "nan"),
        (_circular_list(), "payload[1]", "circular"),
        (_circular_dict(), "payload['a'][0]['up']", "circular"),
        ({1: "one"}, "payload", "int key"),
        ({"a": {None: 1}}, "payload['a']", "NoneType key"),
        ({(1, 2): 1}, "payload", "tuple key"),
        ({"t": (1, 2)}, "payload['t']", "tuple"),
        ({1, 2}, "payload", "set"),
        (frozenset(), "payload", "frozenset"),
        (b"bytes", "payload", "bytes"),
        ([object()], "payload[0]", "object"),
        ({"s": "lone \ud800 surrogate"}, "payload['s']", "surrogate"),
        ({"ok": 1, "\udfff": 1}, "payload key", "surrogate"),
        (1 + 2j, "payload", "complex"),
    ],
)
def test_a_payload_that_cannot_round_trip_is_refused_saying_what_and_where(
    payload: Any, where: str, what: str
) -> None:
    with raises_message_error(where, what):
        distro.message({"uri": "/a"}, payload)


def test_a_header_that_cannot_round_trip_is_refused_saying_where() -> None:
    with raises_message_error("headers['x'][0]", "nan"):
        distro.message({"uri": "/a", "x": [float("nan")]})
    with raises_message_error("headers['t']", "tuple"):
        distro.message({"uri": "/a", "t": ("a",)})


def test_too_deep_a_payload_is_a_message_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with raises_message_error("nested too deeply"):
        distro.message({"uri": "/a"}, deep)


def test_moderate_nesting_round_trips() -> None:
    deep: Any = "bottom"
    for index in range(200):
        deep = [deep] if index % 2 else {"k": deep}
    msg = distro.message({"uri": "/a"}, deep)
    assert distro.parse(msg.to_bytes()) == msg


@pytest.mark.parametrize("number", [2**200, -(2**100), 2**64, -(2**63) - 1, 10**300])
def test_integers_of_any_size_round_trip_exactly(number: int) -> None:
    msg = distro.message({"uri": "/a", "n": number}, {"n": [number]})
    assert str(number).encode() in msg.to_bytes()
    back = distro.parse(msg.to_bytes())
    assert type(back.payload["n"][0]) is int
    assert back.payload["n"][0] == number
    assert back.headers["n"] == number


def test_an_integer_beyond_the_int_to_text_limit_is_a_message_error() -> None:
    # Python caps int/str conversion at 4300 digits by default; such a number cannot be written.
    with raises_message_error("payload"):
        distro.message({"uri": "/a"}, 10**5000)


def test_json_subtypes_are_stored_as_plain_json() -> None:
    class Number(int):
        pass

    class Text(str):
        pass

    msg = distro.message({"uri": "/a"}, {"n": Number(3), "t": Text("x")})
    assert_same_json(msg.payload, {"n": 3, "t": "x"})


def test_mutating_what_was_passed_in_changes_nothing() -> None:
    head: dict[str, Any] = {"uri": "/a", "tags": ["x"]}
    payload: dict[str, Any] = {"items": [{"n": 1}], "s": "v"}
    msg = distro.message(head, payload)
    wire = msg.to_bytes()
    head["uri"] = "/changed"
    head["tags"].append("y")
    head["new"] = 1
    payload["items"][0]["n"] = 2
    payload["items"].append(3)
    payload["s"] = "w"
    assert msg.headers == {"uri": "/a", "tags": ["x"]}
    assert msg.payload == {"items": [{"n": 1}], "s": "v"}
    assert msg.to_bytes() == wire


# -- the wire form ---------------------------------------------------------------------------


def test_the_wire_form_is_compact_json_in_key_order_with_raw_utf8() -> None:
    msg = distro.message(
        {"uri": "/café", "verb": "post", "port": 80, "address": "h"},
        {"b": [1, 2.5], "a": "日本😀"},
        id=ID,
    )
    expected = (
        '{"id":"' + ID + '","headers":{"uri":"/café","verb":"POST","port":80,"address":"h"},'
        '"payload":{"b":[1,2.5],"a":"日本😀"}}'
    )
    assert msg.to_string() == expected
    assert str(msg) == expected
    assert msg.to_bytes() == expected.encode("utf-8")
    assert b"\\u" not in msg.to_bytes()


@settings(max_examples=300)
@given(messages())
def test_the_wire_form_is_the_canonical_encoding(msg: distro.Message) -> None:
    fields = {"id": msg.id, "headers": msg.headers, "payload": msg.payload}
    assert msg.to_string() == canonical_json(fields)
    assert msg.to_bytes() == canonical_json(fields).encode("utf-8")
    assert b"\n" not in msg.to_bytes()  # what lets TCP frame messages by newline


@settings(max_examples=300)
@given(messages())
def test_parse_of_the_wire_form_gives_an_equal_message(msg: distro.Message) -> None:
    for wire in (msg.to_bytes(), msg.to_string(), bytearray(msg.to_bytes())):
        back = distro.parse(wire)
        assert back == msg
        assert back.id == msg.id
        assert_same_json(back.headers, msg.headers, "headers")
        assert_same_json(back.payload, msg.payload, "payload")
        assert back.to_bytes() == msg.to_bytes()
    assert distro.parse(memoryview(msg.to_bytes())) == msg


@given(headers(), json_values)
def test_message_keeps_valid_headers_and_payload_exactly(
    head: dict[str, Any], payload: Any
) -> None:
    msg = distro.message(head, payload)
    expected = dict(head)
    if "verb" in expected:
        expected["verb"] = expected["verb"].upper()
    assert_same_json(msg.headers, expected, "headers")
    assert_same_json(msg.payload, payload, "payload")
    assert msg.uri == head["uri"]


def test_uri_and_verb_conveniences() -> None:
    msg = distro.message({"uri": "/Customer/7", "verb": "delete"})
    assert msg.uri == "/Customer/7"
    assert msg.verb == "DELETE"


def test_params_take_no_part_in_equality_or_the_wire_form() -> None:
    msg = distro.message({"uri": "/customer/7"}, [1], id=ID)
    assert msg.params == {}
    same = distro.Message(msg.id, msg.headers, msg.payload, params={"id": "7"})
    assert same == msg
    assert same.to_bytes() == msg.to_bytes()
    assert b"params" not in same.to_bytes()


def test_equality_is_by_id_headers_and_payload() -> None:
    msg = distro.message({"uri": "/a"}, 1, id=ID)
    assert msg == distro.message({"uri": "/a"}, 1, id=ID)
    assert msg == distro.message({"uri": "/a"}, 1.0, id=ID)  # JSON numbers, compared as numbers
    assert msg != distro.message({"uri": "/a"}, 1)  # another id
    assert msg != distro.message({"uri": "/b"}, 1, id=ID)
    assert msg != distro.message({"uri": "/a"}, 2, id=ID)
    something_else: object = "not a message"
    assert msg != something_else


def test_a_message_is_frozen_and_unhashable() -> None:
    msg = distro.message({"uri": "/a"})
    with pytest.raises(AttributeError):
        msg.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(msg)


def test_repr_shows_the_fields() -> None:
    msg = distro.message({"uri": "/a"}, [1], id=ID)
    assert repr(msg) == f"Message(id={ID!r}, headers={{'uri': '/a'}}, payload=[1])"


# -- parsing ---------------------------------------------------------------------------------


def test_parse_takes_str_and_bytes_alike() -> None:
    text = '{"id":"x","headers":{"uri":"/é"},"payload":{"n":1}}'
    assert (
        distro.parse(text) == distro.parse(text.encode()) == distro.parse(bytearray(text, "utf-8"))
    )


@pytest.mark.parametrize("data", [None, 1, 1.5, ["{}"], {"id": "x"}, object()])
def test_parse_refuses_what_is_neither_str_nor_bytes(data: Any) -> None:
    with raises_message_error("expected bytes or str"):
        distro.parse(data)


def test_parse_keeps_unknown_top_level_keys_out_of_the_message() -> None:
    msg = distro.parse('{"extra":1,"payload":2,"headers":{"uri":"/a"},"id":"x","more":[]}')
    assert msg == distro.message({"uri": "/a"}, 2, id="x")
    assert msg.to_string() == '{"id":"x","headers":{"uri":"/a"},"payload":2}'


def test_a_missing_payload_is_null() -> None:
    # JSON.stringify leaves out a payload that is undefined.
    assert distro.parse('{"id":"x","headers":{"uri":"/a"}}').payload is None


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\xff", "UTF-8"),
        (b'{"id":"x","headers":{"uri":"\xc3"}}', "UTF-8"),
        ("", "JSON"),
        ("{", "JSON"),
        ('{"id":"x","headers":{"uri":"/a"}} trailing', "JSON"),
        ("[]", "JSON object"),
        ('"text"', "JSON object"),
        ("null", "JSON object"),
        ('{"headers":{"uri":"/a"}}', "'id'"),
        ('{"id":"","headers":{"uri":"/a"}}', "'id'"),
        ('{"id":7,"headers":{"uri":"/a"}}', "'id'"),
        ('{"id":"x"}', "no 'headers'"),
        ('{"id":"x","headers":null}', "headers must be an object"),
        ('{"id":"x","headers":["uri"]}', "headers must be an object"),
        ('{"id":"x","headers":{}}', "headers['uri']"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":NaN}', "NaN"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":-Infinity}', "Infinity"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":1e400}', "out of range"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":[-1E999]}', "out of range"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":"\\ud800"}', "surrogate"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":"\\udc00\\ud800"}', "surrogate"),
        ('{"id":"x\ud800","headers":{"uri":"/a"}}', "surrogate"),
        ('{"id":"x","headers":{"uri":"/a"},"payload":' + "1" * 5000 + "}", "JSON"),
        ("[" * 100_000, "JSON"),
    ],
)
def test_parse_refuses_anything_else_saying_what(data: str | bytes, what: str) -> None:
    with raises_message_error(what):
        distro.parse(data)


def test_a_header_error_names_the_message() -> None:
    with raises_message_error("message abc", "headers['port']"):
        distro.parse('{"id":"abc","headers":{"uri":"/a","port":0}}')


@settings(max_examples=500)
@given(st.binary())
def test_parse_of_any_bytes_is_a_message_or_a_message_error(data: bytes) -> None:
    _parse_or_message_error(data)


@settings(max_examples=300)
@given(any_text)
def test_parse_of_any_text_is_a_message_or_a_message_error(data: str) -> None:
    _parse_or_message_error(data)
    _parse_or_message_error(data.encode("utf-8", "surrogatepass"))


@settings(max_examples=300)
@given(json_values)
def test_parse_of_any_json_value_is_a_message_or_a_message_error(value: Any) -> None:
    _parse_or_message_error(json.dumps(value, ensure_ascii=False))
    _parse_or_message_error(json.dumps(value))


@settings(max_examples=500)
@given(wire_objects)
def test_parse_of_any_message_shaped_object_is_a_message_or_a_message_error(
    obj: dict[str, Any],
) -> None:
    for text in (json.dumps(obj), json.dumps(obj, ensure_ascii=False, indent=1)):
        msg = _parse_or_message_error(text)
        if msg is not None:
            assert msg.id == obj["id"]
            assert distro.parse(msg.to_bytes()) == msg


@settings(max_examples=300)
@given(wire_objects)
def test_message_of_any_headers_is_a_message_or_a_message_error(obj: dict[str, Any]) -> None:
    try:
        msg = distro.message(obj.get("headers"), obj.get("payload"))  # type: ignore[arg-type]
    except distro.MessageError:
        return
    assert distro.parse(msg.to_bytes()) == msg


def _parse_or_message_error(data: str | bytes) -> distro.Message | None:
    try:
        msg = distro.parse(data)
    except distro.MessageError:
        return None
    assert isinstance(msg, distro.Message)
    assert type(msg.id) is str and msg.id
    assert type(msg.uri) is str and msg.uri
    assert msg.verb is None or msg.verb in distro.VERBS
    return msg
