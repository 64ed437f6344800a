"""Requests, replies and RECEIVED acknowledgements: building them, deciding which reply a
request gets (:func:`answer`) and matching them up. Pure.

On the wire (docs/wire-format.md):

* a request is an ordinary message whose headers carry ``"replyTo"`` (a string);
* its reply is ``{"uri": "REPLY", "inReplyTo": <request id>}`` with the handler's return value
  as payload, or, when the handler failed or nothing handled it, the same headers plus
  ``"error": <text>`` and a null payload;
* a RECEIVED acknowledgement is ``{"uri": "RECEIVED"}`` with payload ``{"msgId": <id>}``,
  exactly the JavaScript original's form, sent to the ``address``/``port`` the message named.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ._codec import CodecError, dumps, encode_and_copy
from ._exceptions import MessageError, RemoteError
from ._ids import new_id
from ._message import Message, message

__all__ = [
    "RECEIVED",
    "REPLY",
    "Pending",
    "ack_target",
    "answer",
    "as_request",
    "error_reply",
    "no_handler",
    "received",
    "reply",
    "reply_outcome",
]

REPLY = "REPLY"
RECEIVED = "RECEIVED"

W = TypeVar("W")


def as_request(msg: Message, reply_to: str) -> bytes:
    """Encode ``msg`` as a request: same id, headers plus ``replyTo``."""
    headers = {**msg.headers, "replyTo": reply_to}
    return dumps({"id": msg.id, "headers": headers, "payload": msg.payload})


def reply(request: Message, payload: Any) -> bytes:
    """Encode the reply to ``request`` carrying ``payload``.

    :raises MessageError: ``payload`` is not a JSON value (the handler returned something else).
    """
    try:
        data, copy = encode_and_copy(
            {"id": new_id(), "headers": {"uri": REPLY, "inReplyTo": request.id}, "payload": payload}
        )
    except CodecError:
        copy = None
    if copy is None or copy["payload"] != payload:
        # Not a JSON value: let message() say precisely what and where.
        message({"uri": REPLY}, payload)
        raise MessageError("the reply payload does not survive a JSON round trip")
    return data


def error_reply(request: Message, text: str) -> bytes:
    """Encode an error reply to ``request``: the client raises RemoteError with ``text``."""
    # Exception texts may hold lone surrogates (from surrogateescape), which UTF-8 cannot carry.
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    headers = {"uri": REPLY, "inReplyTo": request.id, "error": text}
    return dumps({"id": new_id(), "headers": headers, "payload": None})


def no_handler(headers: dict[str, Any]) -> str:
    """The error text for a request nothing handles: ``"no handler for GET /uri"``."""
    return f"no handler for {headers.get('verb') or 'GET'} {headers['uri']}"


def answer(
    request: Message,
    value: Any,
    error: str | None,
    routed: bool,
    limit: int | None,
    transport_name: str,
) -> bytes:
    """Decide and encode what a server sends back to ``request``: the reply carrying
    ``value``, or an error reply saying why not.

    In order: the handlers' ``error``; no route (a catch-all's value never answers); a
    value that is not JSON; a reply larger than the transport carries.

    :param value: the value that answers (the first non-None one of a route handler).
    :param error: the first route handler failure's text, or None.
    :param routed: whether a route matched the request.
    :param limit: the transport's ``max_message_size``, or None.
    :param transport_name: the transport's name, for the too-large text.
    :returns: the reply or error-reply frame.
    """
    if error is None and not routed:
        error = no_handler(request.headers)
    if error is None:
        try:
            data = reply(request, value)
        except MessageError as exc:
            error = f"the handler's return value cannot be sent: {exc}"
        else:
            if limit is None or len(data) <= limit:
                return data
            error = (
                f"the reply is {len(data)} bytes encoded; "
                f"{transport_name} carries at most {limit} bytes in one message"
            )
    return error_reply(request, error)


def received(msg_id: str) -> Message:
    """The RECEIVED acknowledgement for the message ``msg_id``."""
    return message({"uri": RECEIVED}, {"msgId": msg_id})


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
    error = headers.get("error")
    if error is not None:
        return request_id, None, RemoteError(request_id, str(error))
    return request_id, msg.payload, None


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
