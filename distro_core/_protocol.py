"""Requests, replies and RECEIVED acknowledgements: building them, deciding which reply a
request gets (:func:`answer`) and matching them up. Pure.

On the wire (docs/wire-format.md):

* a request is an ordinary message whose headers carry ``"replyTo"`` (a string) and, from
  distro clients, ``"replyWithin"``: the milliseconds the caller waits for the reply;
* its reply is ``{"uri": "REPLY", "inReplyTo": <request id>}`` with the handler's return value
  as payload (and the headers of a :class:`~distro_core.Reply` it returned), or, when the
  handler failed or nothing handled it, the same headers plus the structured error
  (:class:`Problem`): ``"error": <message>``, ``"code": <a code>`` and, when it has details,
  ``"errorDetails": <any JSON value>``, with a null payload;
* a RECEIVED acknowledgement is ``{"uri": "RECEIVED"}`` with payload ``{"msgId": <id>}``,
  exactly the JavaScript original's form, sent to the ``address``/``port`` the message named.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import attrs

from ._codec import CodecError, dumps, encode_and_copy
from ._exceptions import MessageError, RemoteError
from ._ids import new_id
from ._message import _UNDECODED, Message, message, plain_encoding
from ._reply import Reply

__all__ = [
    "ERROR_CODES",
    "CLOSING",
    "EXPIRED",
    "HANDLER_ERROR",
    "HANDLER_TIMEOUT",
    "INVALID_PAYLOAD",
    "NOT_SERIALIZABLE",
    "NO_HANDLER",
    "OVERLOADED",
    "RECEIVED",
    "REPLY",
    "REPLY_WITHIN",
    "TOO_LARGE",
    "Pending",
    "Problem",
    "ack_target",
    "answer",
    "as_request",
    "error_reply",
    "error_text",
    "no_handler",
    "received",
    "received_size",
    "reply",
    "reply_outcome",
    "reply_within",
]

REPLY = "REPLY"
RECEIVED = "RECEIVED"
REPLY_WITHIN = "replyWithin"
"""The request header carrying how long the caller waits for the reply, in milliseconds."""

NO_HANDLER = "no_handler"
"""Error code: no handler matched the request."""
HANDLER_ERROR = "handler_error"
"""Error code: a handler raised (an unexpected exception: the message says "internal error"
unless the server exposes errors)."""
INVALID_PAYLOAD = "invalid_payload"
"""Error code: the payload does not validate as the handler's annotated type."""
HANDLER_TIMEOUT = "handler_timeout"
"""Error code: an async handler ran past its deadline and was cancelled."""
NOT_SERIALIZABLE = "not_serializable"
"""Error code: the handler's return value is not a JSON value."""
TOO_LARGE = "too_large"
"""Error code: the reply is larger than the transport carries in one message."""
OVERLOADED = "overloaded"
"""Error code: the server could not take the request (its queues were full)."""
EXPIRED = "expired"
"""Error code: the request's deadline passed before it started (distro servers do not send it:
the caller has given up; other implementations may)."""
CLOSING = "closing"
"""Error code: the server was closing and did not handle the request (another may: a
confirmed send is sent again)."""
ERROR_CODES = frozenset(
    {
        NO_HANDLER,
        HANDLER_ERROR,
        HANDLER_TIMEOUT,
        INVALID_PAYLOAD,
        NOT_SERIALIZABLE,
        TOO_LARGE,
        OVERLOADED,
        EXPIRED,
        CLOSING,
    }
)
"""Every error code distro itself sends in a reply's ``code`` header (a handler's
:class:`~distro_core.Reject` may send its own; readers keep unknown ones)."""

ERROR_DETAILS = "errorDetails"
"""The error reply header carrying the error's details (any JSON value), when it has some."""


@attrs.frozen
class Problem:
    """The structured error an error reply carries: what the caller's
    :class:`~distro_core.RemoteError` holds.

    :ivar code: a stable token (:data:`ERROR_CODES`, or a :class:`~distro_core.Reject`'s).
    :ivar message: the text for people.
    :ivar details: any JSON value, or None.
    """

    code: str
    message: str
    details: Any = None


_TEXTS = {
    HANDLER_ERROR: "the handler failed",
    HANDLER_TIMEOUT: "the handler took too long and was cancelled",
    INVALID_PAYLOAD: "the payload is not what the handler takes",
    NOT_SERIALIZABLE: "the handler's return value cannot be sent",
    TOO_LARGE: "the reply is too large for the transport",
    OVERLOADED: "the server is overloaded",
    EXPIRED: "the request's deadline passed before it started",
    CLOSING: "the server was closing and did not handle it",
}

_ELLIPSIS = "\u2026"

W = TypeVar("W")


def as_request(
    msg: Message, reply_to: str, timeout: float | None = None, confirm: bool = False
) -> bytes:
    """Encode ``msg`` as a request: same id, headers plus ``replyTo`` and, given ``timeout``
    (seconds), ``replyWithin`` (whole milliseconds, rounded up); with ``confirm``, the
    ``"confirm": true`` header of a confirmed send (docs/wire-format.md)."""
    old = msg.headers
    headers = {**old, "replyTo": reply_to}
    if timeout is not None:
        headers[REPLY_WITHIN] = max(1, math.ceil(timeout * 1000))
    if confirm:
        headers["confirm"] = True
    raw = msg._raw
    if (
        msg._payload is _UNDECODED
        and raw is not None
        and "replyTo" not in old
        and REPLY_WITHIN not in old
        and "confirm" not in old
    ):
        # Made by message() and not decoded yet: its encoding is orjson's of the id, the
        # headers and the payload, in that order, so the request is that encoding with the
        # new headers written before the headers object closes; the payload is not decoded
        # and encoded again.
        # The id comes first, and a quote in it would be escaped: the first ',"headers":'
        # is the member's own.
        end = raw.index(_HEADERS) + len(_HEADERS) + len(dumps(old)) - 1
        added = dumps({k: headers[k] for k in headers if k not in old})
        return b"".join((raw[:end], b",", added[1:-1], raw[end:]))
    return dumps({"id": msg.id, "headers": headers, "payload": msg.payload})


_HEADERS = b',"headers":'


def reply_within(headers: dict[str, Any]) -> float | None:
    """How long the caller of a request waits for its reply, in seconds, from its
    ``replyWithin`` header; None when it has none or it is not a positive finite number (the
    header is advisory: a bad one is ignored)."""
    within = headers.get(REPLY_WITHIN)
    if isinstance(within, (int, float)) and type(within) is not bool and 0 < within < math.inf:
        return within / 1000
    return None


def reply(request: Message, payload: Any) -> bytes:
    """Encode the reply to ``request`` carrying ``payload``, or a :class:`~distro_core.Reply`'s
    payload and headers.

    :raises MessageError: the payload (or a Reply's headers) is not a JSON value (the handler
        returned something else).
    """
    id = new_id()
    headers = {"uri": REPLY, "inReplyTo": request.id}
    plain = plain_encoding(id, headers, payload)
    if plain is not None:
        return plain
    try:
        data, copy = encode_and_copy({"id": id, "headers": headers, "payload": payload})
        same = copy is not None and copy["payload"] == payload
    except (CodecError, RecursionError):
        # A Reply is no JSON value either: found here, plain values pay nothing for it.
        if type(payload) is Reply:
            return _with_headers(request, payload)
        same = False
    if not same:
        # Not a JSON value: let message() say precisely what and where.
        message({"uri": REPLY}, payload)
        raise MessageError("the reply payload does not survive a JSON round trip")
    return data


def _with_headers(request: Message, answer: Reply) -> bytes:
    """Encode the reply to ``request`` carrying a Reply's payload and headers (the reserved
    ones were refused when the Reply was made)."""
    headers = {"uri": REPLY, "inReplyTo": request.id, **answer.headers}
    try:
        data, copy = encode_and_copy(
            {"id": new_id(), "headers": headers, "payload": answer.payload}
        )
        same = copy["payload"] == answer.payload and copy["headers"] == headers
    except (CodecError, RecursionError):
        same = False
    if not same:
        message(headers, answer.payload)  # says precisely what and where
        raise MessageError("the reply does not survive a JSON round trip")
    return data


def error_reply(
    request: Message,
    text: str,
    code: str | None = None,
    limit: int | None = None,
    details: Any = None,
) -> bytes | None:
    """Encode an error reply to ``request``: the client raises RemoteError with ``text``,
    ``code`` and ``details``.

    :param code: one of :data:`ERROR_CODES` (or a Reject's), or None for no ``code`` header.
    :param limit: the most bytes the reply may take. A reply over it is sent in a compact
        form: an id of 8 characters instead of 36 (nothing correlates by a reply's own id),
        no (null) payload member, no details, and its text cut to fit, marked with a
        trailing ``…`` (or emptied: a client then says what the code means).
    :param details: the ``errorDetails`` header's value (a JSON value), or None for none.
    :returns: the reply, or None when even an empty text does not fit within ``limit``.
    """
    # Exception texts may hold lone surrogates (from surrogateescape), which UTF-8 cannot carry.
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    headers: dict[str, Any] = {"uri": REPLY, "inReplyTo": request.id, "error": text}
    if code is not None:
        headers["code"] = code
    reply_id = new_id()
    if details is not None:
        full = {**headers, ERROR_DETAILS: details}
        try:
            data = dumps({"id": reply_id, "headers": full, "payload": None})
        except (CodecError, RecursionError):
            data = None  # not JSON after all (Reject and the converters check): left out
        if data is not None and (limit is None or len(data) <= limit):
            return data
    data = dumps({"id": reply_id, "headers": headers, "payload": None})
    if limit is None or len(data) <= limit:
        return data
    reply_id = reply_id[:8]
    headers["error"] = ""
    room = limit - len(dumps({"id": reply_id, "headers": headers}))
    if room < 0:
        return None
    # A client says "no handler for VERB uri" itself (it knows the request); a few letters
    # of any text say nothing.
    if code != NO_HANDLER and room >= _SHORTEST:
        headers["error"] = _cut(text, room)
    return dumps({"id": reply_id, "headers": headers})


_SHORTEST = 16
"""The fewest bytes of a cut error text worth sending."""


def _cut(text: str, room: int) -> str:
    """``text`` cut (and marked with an ellipsis) so that it takes at most ``room`` bytes as
    a JSON string's contents; ``""`` when not even the mark fits; ``text`` when it fits."""
    if len(dumps(text)) - 2 <= room:
        return text  # the id and payload made room enough: whole, not marked
    keep = min(len(text), room)
    while keep > 0:
        cut = text[:keep] + _ELLIPSIS
        over = len(dumps(cut)) - 2 - room
        if over <= 0:
            return cut
        keep -= over  # each character takes at least one byte: this converges fast
    return ""


def error_text(code: str | None, request: Message) -> str:
    """What an error reply with an empty text (cut to fit a small request) means: the text a
    server would have sent for ``code``, as far as the requester can tell."""
    if code == NO_HANDLER:
        return no_handler(request.headers)
    return _TEXTS.get(code or "", "the server sent no error text") + f" (code {code})"


def no_handler(headers: dict[str, Any]) -> str:
    """The error text for a request nothing handles: ``"no handler for GET /uri"``."""
    return f"no handler for {headers.get('verb') or 'GET'} {headers['uri']}"


def answer(
    request: Message,
    value: Any,
    error: Problem | None,
    routed: bool,
    limit: int | None,
    transport_name: str,
    error_limit: int | None = None,
) -> bytes | None:
    """Decide and encode what a server sends back to ``request``: the reply carrying
    ``value``, or an error reply saying why not.

    In order: the handlers' ``error``; no route (a catch-all's value never answers); a
    value that is not JSON; a reply larger than the transport carries.

    :param value: the value that answers (the first non-None one of a route handler).
    :param error: what the first route handler failure tells the caller, or None.
    :param routed: whether a route matched the request.
    :param limit: the transport's ``max_message_size``, or None.
    :param transport_name: the transport's name, for the too-large text.
    :param error_limit: the most bytes an *error* reply may take (the request's size over a
        transport whose source addresses can be forged: no amplification), or None (or False,
        so that a caller may pass ``spoofable and len(frame)``).
    :returns: the reply or error-reply frame; None when an error reply cannot fit within
        ``error_limit``.
    """
    if error is None and not routed:
        error = Problem(NO_HANDLER, no_handler(request.headers))
    if error is None:
        try:
            data = reply(request, value)
        except MessageError as exc:
            error = Problem(NOT_SERIALIZABLE, f"the handler's return value cannot be sent: {exc}")
        else:
            if limit is None or len(data) <= limit:
                return data
            error = Problem(
                TOO_LARGE,
                f"the reply is {len(data)} bytes encoded; "
                f"{transport_name} carries at most {limit} bytes in one message",
            )
    if error_limit:
        limit = error_limit if limit is None else min(limit, error_limit)
    return error_reply(request, error.message, error.code, limit, error.details)


def received(msg_id: str) -> Message:
    """The RECEIVED acknowledgement for the message ``msg_id``."""
    return message({"uri": RECEIVED}, {"msgId": msg_id})


_RECEIVED_FRAME = len(received("").to_bytes()) - len(dumps(""))


def received_size(msg_id: str) -> int:
    """The encoded size of :func:`received` for ``msg_id``, without building it."""
    return _RECEIVED_FRAME + len(dumps(msg_id))


def ack_target(msg: Message) -> tuple[str, int] | None:
    """The ``(address, port)`` a message asks its RECEIVED to go to, or None."""
    headers = msg.headers
    if "port" in headers and "address" in headers:
        return headers["address"], headers["port"]
    return None


def reply_outcome(msg: Message) -> tuple[str, Any, RemoteError | None] | None:
    """Read a reply: ``(request id, payload, error)``, or None when ``msg`` is not a reply."""
    headers = msg.headers
    if headers["uri"] != REPLY:
        return None
    request_id = headers.get("inReplyTo")
    if type(request_id) is not str:
        raise MessageError(f"reply {msg.id} has no string 'inReplyTo'")
    if "error" in headers and headers["error"] is not None:
        return request_id, None, remote_error(request_id, headers)
    return request_id, msg.payload, None


_RAW_TEXT = 1000
"""The most characters of a malformed error kept as its text."""


def remote_error(request_id: str, headers: dict[str, Any]) -> RemoteError:
    """The RemoteError an error reply's headers make. Any implementation may send anything
    there: an error that is not text (an object ``{"code", "message", "details"}``, say) is
    read for what it holds, or else kept as its raw JSON text; a code that is not text is
    none. Never raises."""
    error, code, details = headers["error"], headers.get("code"), headers.get(ERROR_DETAILS)
    if type(error) is not str:
        if type(error) is dict and type(error.get("message")) is str:
            code = error.get("code", code)
            details = error.get("details", details)
            error = error["message"]
        else:
            try:  # the raw text, cut (JSON already parsed once: it encodes again)
                raw = dumps(error).decode("utf-8")
            except (CodecError, RecursionError):
                raw = "(the server's error is not text)"
            error = raw if len(raw) <= _RAW_TEXT else raw[:_RAW_TEXT] + _ELLIPSIS
    return RemoteError(request_id, error, code if type(code) is str else None, details)


class Pending(Generic[W]):
    """Requests awaiting replies: request id -> waiter (whatever the I/O side waits on)."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[str, W] = {}

    def add(self, request_id: str, waiter: W) -> None:
        """Start waiting for the reply to ``request_id``.

        :raises MessageError: a request with this id is already waiting.
        """
        if request_id in self._waiting:
            raise MessageError(f"a request with id {request_id} is already waiting for a reply")
        self._waiting[request_id] = waiter

    def pop(self, request_id: str) -> W | None:
        """Stop waiting for ``request_id``; returns its waiter, or None if it was not waiting."""
        return self._waiting.pop(request_id, None)

    def drain(self) -> list[W]:
        """Stop waiting for everything; returns every waiter."""
        waiters = list(self._waiting.values())
        self._waiting.clear()
        return waiters

    def __len__(self) -> int:
        return len(self._waiting)
