"""JSON encoding and decoding for the wire format, with orjson when installed.

Compact JSON (no spaces), UTF-8, non-ASCII characters written as themselves: what the JavaScript
original's ``JSON.stringify`` produced. orjson is used when it is installed (``distro-core[fast]``);
the standard library gives the same results where orjson cannot (integers beyond 64 bits).
Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "BACKEND",
    "CodecError",
    "dumps",
    "encode_and_copy",
    "loads",
    "stdlib_dumps",
    "stdlib_loads",
]


class CodecError(ValueError):
    """Raised by :func:`dumps` and :func:`loads` with a human-readable reason."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise CodecError(f"number {text} is out of range for a double")
    return value


def _reject_constant(name: str) -> Any:
    raise CodecError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))

# Python's repr writes 1.5e-05 and 1.5e-07 where orjson writes 0.000015 and 1.5e-7 (the only
# floats on which they differ: exponents -5 to -9). The encoding must not depend on which encoder
# ran, so the standard library's output is rewritten to orjson's. Strings are matched first so
# that text inside them is left alone.
_SMALL_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?)(\d)(?:\.(\d+))?e-0(\d)', re.DOTALL)


def _as_orjson(match: re.Match[str]) -> str:
    sign, lead, fraction, exponent = match.groups()
    if lead is None:
        return match.group(0)
    if exponent == "5":
        return f"{sign}0.0000{lead}{fraction or ''}"
    return f"{sign}{lead}{'.' + fraction if fraction else ''}e-{exponent}"


def stdlib_dumps(obj: Any) -> bytes:
    """Encode with the standard library only (the reference implementation).

    The bytes are the same as orjson's for every value both can encode.
    """
    try:
        text = _encoder.encode(obj)
        if "e-0" in text:
            text = _SMALL_EXPONENT.sub(_as_orjson, text)
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CodecError("a string holds a lone surrogate, which UTF-8 cannot encode") from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise CodecError(str(exc)) from exc


def stdlib_loads(data: bytes | str) -> Any:
    """Decode with the standard library only (the reference implementation)."""
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            text = data.decode("utf-8")
        else:
            text = data
            if not text.isascii():
                text.encode("utf-8")  # a str may hold lone surrogates that bytes never could
    except UnicodeDecodeError as exc:
        raise CodecError(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    except UnicodeEncodeError as exc:
        raise CodecError(f"text holds a lone surrogate at char {exc.start}") from exc
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise CodecError(f"not valid JSON: {exc.msg} at char {exc.pos}") from exc
    except RecursionError as exc:
        raise CodecError("JSON nested too deeply") from exc
    except CodecError:
        raise
    except ValueError as exc:  # an integer longer than sys.get_int_max_str_digits()
        raise CodecError(f"not valid JSON: {exc}") from exc
    if "\\u" in text or "\\U" in text:
        # Escaped lone surrogates decode to str that UTF-8 cannot encode again.
        try:
            stdlib_dumps(value)
        except CodecError as exc:
            raise CodecError(f"not valid JSON text: {exc}") from None
    return value


try:
    import orjson
except ImportError:  # pragma: no cover - exercised in the no-orjson nox session
    orjson = None  # type: ignore[assignment]

# orjson turns integers beyond 64 bits into floats: from 20 digits up, and from 19 digits below
# -2**63. A run of 19 digits anywhere sends the text to the standard library, which keeps integers
# exact. Mapping every digit to "1" and searching for the run is several times cheaper than a
# regular expression.
_DIGIT_MAP = bytes(0x31 if 0x30 <= i <= 0x39 else 0x30 for i in range(256))
_DIGIT_MAP_STR = str.maketrans({chr(c): "1" for c in range(0x30, 0x3A)})
_LONG_RUN = b"1" * 19
_LONG_RUN_STR = "1" * 19

if orjson is not None:
    _orjson_dumps = orjson.dumps
    _orjson_loads = orjson.loads
    _OPTS = (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    _JSONDecodeError = orjson.JSONDecodeError
    BACKEND = "orjson"

    def dumps(obj: Any) -> bytes:
        """Encode ``obj`` as compact UTF-8 JSON.

        orjson writes NaN and infinities as null where :func:`stdlib_dumps` refuses them; values
        are checked before they get here (:func:`distro_core.message` compares the round trip).

        :raises CodecError: ``obj`` holds something JSON cannot represent.
        """
        try:
            return _orjson_dumps(obj, option=_OPTS)
        except TypeError:
            # Integers beyond 64 bits, exotic types, surrogates: the reference encoder decides.
            return stdlib_dumps(obj)

    def encode_and_copy(obj: Any) -> tuple[bytes, Any]:
        """Encode ``obj`` and decode the result again: the wire form and a private deep copy.

        Comparing the copy with ``obj`` tells whether ``obj`` survives a round trip.

        :raises CodecError: ``obj`` holds something JSON cannot represent.
        """
        try:
            data = _orjson_dumps(obj, option=_OPTS)
        except TypeError:
            data = stdlib_dumps(obj)
            return data, stdlib_loads(data)
        # orjson wrote it, so every integer fits in 64 bits and orjson reads it back exactly.
        return data, _orjson_loads(data)

    def loads(data: bytes | str) -> Any:
        """Decode JSON text; exact for integers of any size.

        :raises CodecError: not UTF-8, not JSON, or a number out of range.
        """
        if isinstance(data, str):
            if data.translate(_DIGIT_MAP_STR).find(_LONG_RUN_STR) >= 0:
                return stdlib_loads(data)
        elif data.translate(_DIGIT_MAP).find(_LONG_RUN) >= 0:
            return stdlib_loads(data)
        try:
            return _orjson_loads(data)
        except _JSONDecodeError as exc:
            # The reference decoder gives the authoritative reason (and accepts nothing orjson
            # rejects except what it must reject too).
            stdlib_loads(data)
            raise CodecError(f"not valid JSON: {exc}") from exc

else:  # pragma: no cover - exercised in the no-orjson nox session
    BACKEND = "json"
    dumps = stdlib_dumps
    loads = stdlib_loads

    def encode_and_copy(obj: Any) -> tuple[bytes, Any]:
        """Encode ``obj`` and decode the result again (see the orjson variant)."""
        data = stdlib_dumps(obj)
        return data, stdlib_loads(data)
