"""The Message: an immutable ``{"id", "headers", "payload"}`` triple and its wire form.

Pure: no I/O, no clock. A message is validated and encoded once, when it is made; the encoding is
kept, so sending it costs no further encoding. The message holds its own copy of the headers and
payload (the decoded form of its encoding), so mutating the objects passed in changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._codec import BACKEND, CodecError, dumps, encode_and_copy, loads
from ._exceptions import MessageError
from ._ids import new_id

__all__ = [
    "VERBS",
    "Message",
    "message",
    "new_message",
    "parse",
    "parse_parts",
    "plain_encoding",
]

VERBS = frozenset({"HEAD", "GET", "POST", "PUT", "DELETE", "PATCH"})
"""The verbs a message may carry in its ``verb`` header."""


class _Undecoded:
    """The payload of a message made by :func:`message` until it is first read: decoding it
    from the message's own encoding then gives the private copy (see :attr:`Message.payload`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not decoded yet>"


_UNDECODED: Any = _Undecoded()


@attrs.frozen(eq=False, hash=False, repr=False)
class Message:
    """One message: a string ``id`` (a uuid4), a ``headers`` mapping and a JSON ``payload``.

    Make messages with :func:`message` or :func:`parse`; the constructor does no validation.
    Two messages are equal when id, headers and payload are equal; ``params`` (the path
    parameters of the route that matched, set by the server) takes no part in equality or in
    the wire form.
    """

    id: str
    headers: dict[str, Any]
    _payload: Any = attrs.field(default=None, alias="payload")
    params: dict[str, str] = attrs.field(factory=dict, eq=False)
    _raw: bytes | None = attrs.field(default=None, eq=False, alias="raw")
    peer_identity: str | None = attrs.field(default=None, eq=False, kw_only=True)
    """Who sent it, as the transport authenticated the sender (set by the server): over tcp
    with TLS, the subject of the client's certificate (``"CN=orders,O=Shop"``); over zmq with
    CURVE, the client's public key. None when the transport authenticated nobody."""

    __hash__ = None  # type: ignore[assignment]

    @property
    def payload(self) -> Any:
        """The payload: any JSON value, the message's own copy (mutating it changes nothing
        else; the wire form stays what it was when the message was made)."""
        payload = self._payload
        if payload is _UNDECODED:
            # Made by message() from plain JSON values: its encoding holds exactly them, and
            # decoding it gives the copy a round trip would have given, when first needed.
            payload = loads(self.to_bytes())["payload"]
            _set_payload(self, payload)
        return payload

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Message:
            return NotImplemented
        assert isinstance(other, Message)
        return (
            self.id == other.id and self.headers == other.headers and self.payload == other.payload
        )

    @property
    def uri(self) -> str:
        """The ``uri`` header."""
        uri: str = self.headers["uri"]
        return uri

    @property
    def verb(self) -> str | None:
        """The ``verb`` header (upper-case), or None when the message has none."""
        return self.headers.get("verb")

    def to_bytes(self) -> bytes:
        """Return the wire form: compact UTF-8 JSON ``{"id":…,"headers":…,"payload":…}``."""
        raw = self._raw
        if raw is None:
            raw = _encode(self.id, self.headers, self.payload)
            object.__setattr__(self, "_raw", raw)
        return raw

    def to_string(self) -> str:
        """Return the wire form as text (the same JSON as :meth:`to_bytes`)."""
        return self.to_bytes().decode("utf-8")

    __str__ = to_string

    def __repr__(self) -> str:
        return f"Message(id={self.id!r}, headers={self.headers!r}, payload={self.payload!r})"


_set_id, _set_headers, _set_payload, _set_params, _set_raw, _set_identity = (
    Message.__dict__[name].__set__
    for name in ("id", "headers", "_payload", "params", "_raw", "peer_identity")
)
_new = object.__new__

_FAST = BACKEND == "orjson"
if _FAST:
    import orjson

    from ._codec import _OPTS

    _orjson_dumps = orjson.dumps


def new_message(
    id: str,
    headers: dict[str, Any],
    payload: Any,
    params: dict[str, str],
    raw: bytes | None,
    identity: str | None = None,
) -> Message:
    """Build a Message from checked parts, as ``Message(...)`` does but faster.

    attrs' frozen ``__init__`` sets each slot through ``object.__setattr__``; the slots'
    own descriptors do the same work in about two thirds of the time, which counts on a path
    taken for every message sent and received.
    """
    msg = _new(Message)
    _set_id(msg, id)
    _set_headers(msg, headers)
    _set_payload(msg, payload)
    _set_params(msg, params)
    _set_raw(msg, raw)
    _set_identity(msg, identity)
    return msg


def _encode(id: str, headers: Mapping[str, Any], payload: Any) -> bytes:
    return dumps({"id": id, "headers": headers, "payload": payload})


def _describe(value: Any, where: str, on_path: set[int]) -> str | None:
    """Find why ``value`` cannot round-trip through JSON; None when it can."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        if kind is str:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where} holds a lone surrogate, which UTF-8 cannot encode"
        return None
    if kind is int:
        try:
            str(value)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            return f"{where} is an integer of {value.bit_length()} bits, too long to write out"
        return None
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            return f"{where} is {value!r}, which JSON cannot represent"
        return None
    if kind is dict or kind is list:
        if id(value) in on_path:
            return f"{where} is circular (it contains itself)"
        on_path.add(id(value))
        try:
            if kind is dict:
                for key, item in value.items():
                    if type(key) is not str:
                        return (
                            f"{where} has a {type(key).__name__} key {key!r}; JSON keys are strings"
                        )
                    found = _describe(key, f"{where} key {key!r}", on_path) or _describe(
                        item, f"{where}[{key!r}]", on_path
                    )
                    if found:
                        return found
            else:
                for index, item in enumerate(value):
                    found = _describe(item, f"{where}[{index}]", on_path)
                    if found:
                        return found
        finally:
            on_path.discard(id(value))
        return None
    return f"{where} is a {kind.__name__} ({value!r:.60}), which is not a JSON value"


def _check_headers(headers: Any, where: str = "headers") -> dict[str, Any]:
    """Return ``headers`` checked (verb upper-cased), or raise MessageError saying what is wrong.

    Every message made or parsed comes through here, so the common case (a uri, an upper-case
    verb or none, no acknowledgement address) is decided first, in one expression.
    """
    if type(headers) is dict:
        uri = headers.get("uri")
        verb = headers.get("verb")
        if (
            type(uri) is str
            and uri
            and (verb is None or (type(verb) is str and verb in VERBS))
            and "port" not in headers
            and "address" not in headers
        ):
            return headers
    elif not isinstance(headers, dict):
        raise MessageError(f"{where} must be an object, got {type(headers).__name__}")
    uri = headers.get("uri")
    if type(uri) is not str or not uri:
        raise MessageError(f"{where}['uri'] must be a non-empty string, got {uri!r:.60}")
    verb = headers.get("verb")
    if verb is not None:
        if type(verb) is not str or not verb.isascii() or verb.upper() not in VERBS:
            raise MessageError(
                f"{where}['verb'] must be one of {', '.join(sorted(VERBS))}, got {verb!r:.60}"
            )
        if not verb.isupper():
            headers = {**headers, "verb": verb.upper()}
    checked: dict[str, Any] = headers
    if "address" in headers and type(headers["address"]) is not str:
        raise MessageError(f"{where}['address'] must be a string, got {headers['address']!r:.60}")
    if "port" in headers:
        port = headers["port"]
        if type(port) is not int or not 1 <= port <= 65535:
            raise MessageError(f"{where}['port'] must be an integer 1..65535, got {port!r:.60}")
    return checked


def message(headers: Mapping[str, Any], payload: Any = None, *, id: str | None = None) -> Message:
    """Make a message with a fresh uuid4 id.

    :param headers: must hold a non-empty string ``uri``; optionally ``verb`` (HEAD, GET, POST,
        PUT, DELETE or PATCH, any case, stored upper-case), ``address`` (str) and ``port``
        (int 1..65535) naming where a RECEIVED acknowledgement goes; any other JSON value is kept.
        Nothing is added to them.
    :param payload: any JSON value.
    :param id: use this id instead of a fresh one (for replaying a message).
    :returns: the message, already encoded.
    :raises MessageError: the headers are invalid, or something does not round-trip through
        JSON (a circular structure, NaN or infinity, a non-string key, a tuple, an object); the
        text says what and where.
    """
    if id is None:
        id = new_id()
    elif type(id) is not str or not id:
        raise MessageError(f"id must be a non-empty string, got {id!r:.60}")
    if type(headers) is not dict:
        if not isinstance(headers, Mapping):
            raise MessageError(f"headers must be a mapping, got {type(headers).__name__}")
        headers = dict(headers)
    headers = _check_headers(headers)
    # Plain JSON values (the common case) survive the round trip by construction (see
    # plain_encoding): the message keeps a copy of its flat headers, and decodes its payload
    # from its own encoding only when someone reads it (a sender seldom does).
    raw = plain_encoding(id, headers, payload)
    if raw is not None:
        # orjson's output keeps a ~4 KiB buffer behind a small message; a message may be kept
        # for a long time, so it keeps a right-sized copy (about 0.15 µs) instead.
        return new_message(id, headers.copy(), _UNDECODED, {}, bytes(memoryview(raw)))
    try:
        # The decoded copy becomes the message's own headers and payload: it proves the round
        # trip and detaches the message from objects the caller may mutate later.
        raw, copy = encode_and_copy({"id": id, "headers": headers, "payload": payload})
        same = copy["headers"] == headers and copy["payload"] == payload
    except (CodecError, RecursionError) as exc:
        raise MessageError(_explain(headers, payload, f"cannot encode message: {exc}")) from None
    if not same:
        raise MessageError(_explain(headers, payload, "message does not survive a JSON round trip"))
    return new_message(id, copy["headers"], copy["payload"], {}, bytes(memoryview(raw)))


def plain_encoding(id: str, headers: dict[str, Any], payload: Any) -> bytes | None:
    """The wire form of a message made of plain JSON values, or None when the values need the
    careful path (encode, decode, compare: :func:`message`), which also explains what is wrong.

    Plain: ``headers`` (already checked by ``_check_headers``) hold only str, int, float, bool
    and None; the payload only dicts, lists and those. orjson encoding them without writing a
    ``null`` proves the rest: keys are strings, integers fit, nothing is circular, strings are
    valid, no float was NaN or infinite. Such values decode to equal ones, so no round trip is
    needed to know the message survives it. The bytes are orjson's own (see ``message``).
    """
    if not _FAST:
        return None
    try:
        raw: bytes = _orjson_dumps({"id": id, "headers": headers, "payload": payload}, option=_OPTS)
    except TypeError:
        return None  # beyond orjson (long integers, odd types): the careful path decides
    if (
        raw.find(b"null") < 0  # NaN and infinities become null; so may a None: careful path
        and (
            # The uri is a str, the verb a str or None (checked by _check_headers).
            len(headers) == 1
            or (len(headers) == 2 and "verb" in headers)
            or set(map(type, headers.values())) <= _SCALARS
        )
        and (
            set(map(type, payload.values())) <= _SCALARS  # a flat object, the most common
            if type(payload) is dict
            else _plain(payload)
        )
    ):
        return raw
    return None


_SCALARS = frozenset({str, int, float, bool, type(None)})
_VALUES = _SCALARS | {dict, list}
_DEEPEST = 250  # orjson refuses more than 255 levels of nesting


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value``, which orjson has just encoded without a null in sight, is made only
    of dicts, lists, str, int, float, bool (and so decodes to an equal value).

    orjson encoding it already proves that keys are strings, integers fit in 64 bits, nothing
    is circular and strings are valid; without a null in its output, no float was NaN or
    infinite. What remains is types orjson writes as something else (a tuple as an array, an
    enum as its value, a UUID as a string...). False is not an error: the caller then checks
    the round trip the careful way, which also explains what is wrong.
    """
    kind = type(value)
    if kind is dict:
        values: Any = value.values()
    elif kind is list:
        values = value
    else:
        return kind in _SCALARS
    kinds = set(map(type, values))
    if kinds <= _SCALARS:
        return True
    if not kinds <= _VALUES or depth > _DEEPEST:
        return False
    for item in values:
        kind = type(item)
        if (kind is dict or kind is list) and not _plain(item, depth + 1):
            return False
    return True


def _explain(headers: dict[str, Any], payload: Any, fallback: str) -> str:
    try:
        problem = _describe(headers, "headers", set()) or _describe(payload, "payload", set())
    except RecursionError:
        problem = "the headers or payload are nested too deeply"
    return problem or fallback


def parse_parts(data: bytes | bytearray | memoryview | str) -> tuple[str, dict[str, Any], Any]:
    """Parse the wire form into ``(id, headers, payload)``, validated; see :func:`parse`.

    :raises MessageError: as :func:`parse`.
    """
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, (bytes, str)):
            raise MessageError(f"cannot parse a {type(data).__name__}; expected bytes or str")
    try:
        obj = loads(data)
    except CodecError as exc:
        raise MessageError(str(exc)) from None
    if type(obj) is not dict:
        raise MessageError(f"a message is a JSON object, got {type(obj).__name__}")
    id = obj.get("id")
    if type(id) is not str or not id:
        raise MessageError(f"'id' must be a non-empty string, got {id!r:.60}")
    headers = obj.get("headers")
    if headers is None and "headers" not in obj:
        raise MessageError(f"message {id} has no 'headers'")
    try:
        headers = _check_headers(headers)
    except MessageError as exc:
        raise MessageError(f"message {id}: {exc}") from None
    return id, headers, obj.get("payload")


def parse(data: bytes | bytearray | memoryview | str) -> Message:
    """Parse the wire form (str or UTF-8 bytes) into a Message.

    Top-level keys other than ``id``, ``headers`` and ``payload`` are ignored; a missing
    ``payload`` is null.

    :raises MessageError: bad UTF-8, bad JSON, not an object, or a missing or ill-typed field.
    """
    id, headers, payload = parse_parts(data)
    return new_message(id, headers, payload, {}, None)
