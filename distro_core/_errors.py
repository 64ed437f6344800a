"""What the caller of a request is told when a handler fails (:func:`problem_of`), and how the
server sorts failures before they are logged (:func:`failures`). Pure: no I/O.

* :class:`~distro_core.Reject` (an expected failure) reaches the caller as it is: its code,
  message and details.
* A :class:`~distro_core.RemoteError` from a call the handler made to another service passes
  through as it is (its code, message and details), not nested as one more line of text.
* :class:`~distro_core.InvalidPayload` (a typed handler's payload did not validate) is
  ``invalid_payload``, with the fields that failed in its details; it is counted
  ``stats.dropped["invalid_payload"]`` and logged without a traceback, not as a handler error.
* A deadline passed is ``handler_timeout``, with the server's text.
* Anything else is unexpected: the caller gets code ``handler_error`` and
  ``"internal error (message <id>)"``; the exception and its traceback are in the
  server's log. A server made with ``expose_errors=True`` (for development) sends
  ``"ValueError: ..."`` instead, with the exception's type and traceback in the details.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from ._dispatch import Failed, Handling
from ._exceptions import InvalidPayload, Reject, RemoteError
from ._protocol import HANDLER_ERROR, HANDLER_TIMEOUT, INVALID_PAYLOAD, Problem

if TYPE_CHECKING:
    from ._handlers import Entry
    from ._message import Message
    from ._stats import ServerLog

__all__ = ["INTERNAL", "failures", "problem_of"]

INTERNAL = "internal error (message {id})"
"""What the caller of a request is told about an unexpected exception (``{id}``: the request's
id, to find the log line with the traceback)."""


def problem_of(done: Handling, msg: Message, expose: bool) -> Problem:
    """What the caller of ``msg`` is told about the first route handler failure in ``done``.

    :param expose: tell the exception's type, text and traceback (development only).
    """
    exc = done.exc
    if isinstance(exc, Reject):
        return Problem(exc.code, exc.message, exc.details)
    if isinstance(exc, RemoteError):
        return Problem(exc.code or HANDLER_ERROR, exc.remote, exc.details)
    if isinstance(exc, InvalidPayload):
        fields = [{"field": field, "error": problem} for field, problem in exc.errors]
        return Problem(INVALID_PAYLOAD, str(exc), {"type": exc.type_name, "errors": fields})
    text = done.error or ""
    if done.code == HANDLER_TIMEOUT:
        return Problem(HANDLER_TIMEOUT, text)
    if not expose or exc is None:
        return Problem(HANDLER_ERROR, INTERNAL.format(id=msg.id))
    kind = type(exc)
    trace = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    return Problem(HANDLER_ERROR, text, {"type": kind.__qualname__, "traceback": trace})


def failures(log: ServerLog) -> Failed:
    """The server's :data:`~distro_core._dispatch.Failed` callback: a payload that did not
    validate is counted dropped (``invalid_payload``) and logged with what failed; every other
    failure is the log's :meth:`~distro_core._stats.ServerLog.handler_failed`."""
    handler_failed = log.handler_failed
    dropped = log.dropped

    def failed(entry: Entry, msg: Message, exc: Exception) -> str:
        if type(exc) is InvalidPayload:
            headers = msg.headers
            verb = headers.get("verb") or "GET"
            text = str(exc)
            dropped(
                "invalid_payload",
                f"message {msg.id} ({verb} {headers['uri']}) for {entry.name}: {text}",
            )
            return text
        return handler_failed(entry, msg, exc)

    return failed
