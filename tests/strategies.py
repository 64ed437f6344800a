"""Hypothesis strategies for distro messages, built from the field rules in docs/wire-format.md.

Valid values: :func:`json_values` (any JSON value Python can round-trip: big integers, finite
floats including -0.0 and the extremes, text with astral characters, nesting), :func:`headers`
(a non-empty ``uri``, optional ``verb`` in any case, ``address``, ``port`` and extra headers) and
:func:`messages`. Hostile values: :func:`wire_objects` (dicts with ``id``/``headers``/``payload``
keys of random types) and :func:`any_text`. :func:`assert_same_json` compares JSON values
strictly (``1`` is not ``1.0``, ``-0.0`` is not ``0.0``), which ``==`` does not;
:func:`canonical_json` is the canonical encoding of docs/wire-format.md, written out
independently of the codec so the two can be checked against each other.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

import distro_core as distro

__all__ = [
    "RESERVED_HEADERS",
    "any_text",
    "assert_same_json",
    "canonical_json",
    "floats",
    "headers",
    "integers",
    "json_values",
    "messages",
    "texts",
    "verbs_any_case",
    "wire_objects",
]

RESERVED_HEADERS = frozenset({"uri", "verb", "address", "port"})
"""Headers with rules of their own; every other header is free-form JSON."""

_SPECIAL_TEXT = [
    "",
    "é",
    "日本語",
    "😀",
    "𝄞",
    "\u2028",
    "\x00",
    "\x7f",
    '"\\/',
    "\n\t\r\b\f",
    "e-05",
]

texts = st.one_of(
    st.text(st.characters(codec="utf-8")),
    st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), min_size=1),
    st.sampled_from(_SPECIAL_TEXT),
)
"""Any text UTF-8 can carry: no lone surrogates; astral characters are drawn on purpose."""

any_text = st.text()
"""Any Python text, lone surrogates included (not all of it is valid in a message)."""

integers = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.sampled_from(
        [
            *(2**200, -(2**100), 2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 2**64 - 1),
            *(10**19 - 1, -(10**19 - 1), 10**19, -(10**19), 0),
        ]
    ),
)
"""Integers of every size: JSON integers round-trip exactly, however large."""

floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            *(-0.0, 0.0, 1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324),
            *(2.2250738585072014e-308, 1e-5, 1.5e-7, -9.999e-5, 1e16, 1e21, 0.1, 1.0),
        ]
    ),
)
"""Finite floats, with the extremes and the formatting boundaries drawn on purpose."""

_scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)

json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)
    ),
    max_leaves=20,
)
"""Any JSON value made of dicts with str keys, lists, str, int, float, bool and None."""


@st.composite
def verbs_any_case(draw: st.DrawFn) -> str:
    """A verb from :data:`distro.VERBS`, each letter in a random case."""
    verb = draw(st.sampled_from(sorted(distro.VERBS)))
    lower = draw(st.lists(st.booleans(), min_size=len(verb), max_size=len(verb)))
    return "".join(c.lower() if down else c for c, down in zip(verb, lower, strict=True))


_uris = st.one_of(
    texts.filter(bool),
    st.lists(st.text("abcXYZ019-_.~{}%", min_size=1, max_size=6), min_size=1, max_size=5).map(
        lambda parts: "/" + "/".join(parts)
    ),
)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    """Valid headers: ``uri`` always; ``verb``, ``address``, ``port`` and extras sometimes;
    the keys in a random order."""
    items: dict[str, Any] = {"uri": draw(_uris)}
    if draw(st.booleans()):
        items["verb"] = draw(verbs_any_case())
    if draw(st.booleans()):
        items["address"] = draw(texts)
    if draw(st.booleans()):
        items["port"] = draw(st.integers(min_value=1, max_value=65535))
    extra_keys = texts.filter(lambda key: key not in RESERVED_HEADERS)
    items.update(draw(st.dictionaries(extra_keys, json_values, max_size=3)))
    order = draw(st.permutations(list(items)))
    return {key: items[key] for key in order}


ids = st.one_of(st.uuids(version=4).map(str), texts.filter(bool))
"""Message ids: uuid4 strings as sent, or any non-empty string (receivers accept those too)."""


@st.composite
def messages(draw: st.DrawFn) -> distro.Message:
    """Valid messages made with :func:`distro.message`, with a fresh or a drawn id."""
    head = draw(headers())
    payload = draw(json_values)
    if draw(st.booleans()):
        return distro.message(head, payload)
    return distro.message(head, payload, id=draw(ids))


_anything = st.one_of(json_values, any_text, st.dictionaries(any_text, _scalars, max_size=3))

_hostile_headers = st.one_of(
    headers(),
    _anything,
    st.fixed_dictionaries(
        {},
        optional={
            "uri": st.one_of(_anything, _uris),
            "verb": st.one_of(
                _anything, verbs_any_case(), st.sampled_from(["CONNECT", "po\u017ft"])
            ),
            "address": _anything,
            "port": st.one_of(_anything, st.integers(min_value=-2, max_value=70000)),
            "replyTo": _anything,
        },
    ),
)

wire_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(_anything, ids),
        "headers": _hostile_headers,
        "payload": _anything,
        "extra": _anything,
    },
)
"""Objects shaped like a message with fields of random types: valid and invalid mixed."""


def assert_same_json(actual: Any, expected: Any, where: str = "value") -> None:
    """Assert two JSON values are equal with the same types throughout (``1`` is not ``1.0``,
    ``True`` is not ``1``, ``-0.0`` is not ``0.0``), and dict keys in the same order."""
    assert type(actual) is type(expected), f"{where}: {actual!r} is not {expected!r}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same_json(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_json(a, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
        sign = math.copysign(1.0, actual) == math.copysign(1.0, expected)
        assert sign, f"{where}: {actual!r} and {expected!r} differ in sign"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _canonical_string(text: str) -> str:
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _canonical_float(number: float) -> str:
    text = repr(number)  # the shortest digits that read back as the same double
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    power = int(exponent)
    if power == -5:
        sign = "-" if mantissa.startswith("-") else ""
        return f"{sign}0.0000{mantissa.lstrip('-').replace('.', '')}"
    return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"


def canonical_json(value: Any) -> str:
    """The canonical encoding of a JSON value (docs/wire-format.md, "Encoding"): compact, keys in
    insertion order, strings escaped as ``JSON.stringify`` escapes them, floats in their
    shortest form."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return _canonical_float(value)
    if isinstance(value, str):
        return _canonical_string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{_canonical_string(k)}:{canonical_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    raise TypeError(f"not a JSON value: {value!r}")
