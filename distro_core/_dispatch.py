"""Running the handlers of one message and deciding what they answer. Pure: no I/O, no asyncio.

The rule, the same on every path and written once (:class:`Handling`):

* catch-all handlers (``server.receive``) run first, then the route's handlers, each in
  registration order;
* catch-all handlers only observe: their values never answer and their failures are logged but
  are not the request's error;
* of the route handlers, the first non-None value answers and the first failure is the error
  (an error wins over a value when the reply is built).

There are three ways through, chosen by the server:

* :func:`run_plain`: every handler is a plain function; all run inline, no task. A plain
  function may still return an awaitable (a coroutine, a future): then the rest is left to
* :func:`finish_late`, which awaits those results in registration order;
* :func:`run_async`: some handler is ``async def``; each is called and awaited in turn.

How a handler failure is logged and counted is the caller's business: each runner takes a
:data:`Failed` callback, which also gives the failure its text. Deadlines are the caller's too:
the runners that await take a :data:`Bound` callback that wraps each awaitable result (the server
cancels it past its deadline with :class:`HandlerTimeout`, whose failure gets the error code
``handler_timeout`` instead of ``handler_error``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from inspect import isawaitable
from typing import Any

from ._handlers import Entry
from ._message import Message
from ._protocol import HANDLER_ERROR, HANDLER_TIMEOUT
from ._transport import Outcome

__all__ = [
    "Bound",
    "Failed",
    "HandlerTimeout",
    "Handling",
    "finish_late",
    "outcome",
    "run_async",
    "run_plain",
]

Failed = Callable[[Entry, Message, Exception], str]
"""Called with each handler that raised, the message and the exception: logs and counts the
failure and returns its text for an error reply (``"ValueError: ..."``)."""

Bound = Callable[[Entry, Awaitable[Any]], Awaitable[Any]]
"""Called with a handler and the awaitable it returned; returns what to await instead (the
awaitable itself when the handler has no deadline)."""


class HandlerTimeout(Exception):
    """An async handler ran past its deadline and was cancelled.

    :ivar name: the handler's name.
    :ivar timeout: its deadline, in seconds.
    """

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"{name} took longer than {timeout:g}s and was cancelled")
        self.name = name
        self.timeout = timeout


def _code(exc: Exception) -> str:
    return HANDLER_TIMEOUT if type(exc) is HandlerTimeout else HANDLER_ERROR


class Handling:
    """What the handlers of one message did: the value that answers, the error, whether any
    handler failed, and the results still to await.

    :ivar value: the first non-None value a route handler returned, or None.
    :ivar error: the text of the first route handler failure, or None.
    :ivar code: the error code of that failure (``handler_error``, ``handler_timeout``).
    :ivar exc: the exception of that failure (what the caller is told is made from it).
    :ivar failed: whether any handler raised, catch-alls included.
    :ivar late: ``(entry, result, answers)`` for what is left to resolve, in registration
        order: from the first awaitable a plain handler returned on, every result (awaitable
        or not) waits here so that values keep their order.
    """

    __slots__ = ("code", "error", "exc", "failed", "late", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: str | None = None
        self.code: str | None = None
        self.exc: Exception | None = None
        self.failed = False
        self.late: list[tuple[Entry, Any, bool]] = []

    def returned(self, result: Any, answers: bool) -> None:
        """A handler returned ``result``; ``answers`` is true for a route handler."""
        if answers and self.value is None:
            self.value = result

    def raised(
        self, text: str, answers: bool, code: str = HANDLER_ERROR, exc: Exception | None = None
    ) -> None:
        """A handler failed with ``text`` (raising ``exc``); ``answers`` is true for a route
        handler."""
        self.failed = True
        if answers and self.error is None:
            self.error = text
            self.code = code
            self.exc = exc


def run_plain(
    catch_all: Sequence[Entry], handlers: Sequence[Entry], msg: Message, failed: Failed
) -> Any:
    """Call every handler of ``msg`` inline, catch-alls first, none of them ``async def``.

    :param catch_all: the handlers that receive every message.
    :param handlers: the route's handlers (empty when no route matched).
    :param failed: see :data:`Failed`.
    :returns: in the common case, every handler having returned a plain value without raising,
        the value that answers (None when none does), with nothing allocated; otherwise a
        :class:`Handling`, whose :attr:`~Handling.late` results, if any, :func:`finish_late`
        resolves.
    """
    handling: Handling | None = None
    for entry in catch_all:
        try:
            result = entry.fn(msg)
        except Exception as exc:
            handling = handling or Handling()
            handling.raised(failed(entry, msg, exc), False, HANDLER_ERROR, exc)
            continue
        # Most handlers return None: test that before the (slower) awaitable check.
        if result is not None and isawaitable(result):
            handling = handling or Handling()
            handling.late.append((entry, result, False))
    value: Any = None
    for entry in handlers:
        try:
            result = entry.fn(msg)
        except Exception as exc:
            handling = handling or Handling()
            handling.raised(failed(entry, msg, exc), True, HANDLER_ERROR, exc)
            continue
        if handling is not None and handling.late:
            handling.late.append((entry, result, True))
        elif result is not None:
            if isawaitable(result):
                handling = handling or Handling()
                handling.late.append((entry, result, True))
            elif value is None:
                value = result
    if handling is None:
        return value
    # Values seen before the first awaitable precede everything in ``late``.
    handling.returned(value, True)
    return handling


async def finish_late(
    handling: Handling, msg: Message, failed: Failed, bound: Bound | None = None
) -> Handling:
    """Await the results :func:`run_plain` left in ``handling.late``, in registration order.

    :param bound: see :data:`Bound`; None when no handler has a deadline.
    :returns: ``handling``, complete (``late`` emptied).
    """
    late, handling.late = handling.late, []
    for entry, result, answers in late:
        try:
            if isawaitable(result):
                result = await (result if bound is None else bound(entry, result))
        except Exception as exc:
            handling.raised(failed(entry, msg, exc), answers, _code(exc), exc)
        else:
            handling.returned(result, answers)
    return handling


async def run_async(
    catch_all: Sequence[Entry],
    handlers: Sequence[Entry],
    msg: Message,
    failed: Failed,
    bound: Bound | None = None,
) -> Handling:
    """Call and await every handler of ``msg`` in turn, catch-alls first (some are ``async``).

    :param bound: see :data:`Bound`; None when no handler has a deadline.
    :returns: what they did.
    """
    handling = Handling()
    for answers, entries in ((False, catch_all), (True, handlers)):
        for entry in entries:
            try:
                result = entry.fn(msg)
                if isawaitable(result):
                    result = await (result if bound is None else bound(entry, result))
            except Exception as exc:
                handling.raised(failed(entry, msg, exc), answers, _code(exc), exc)
            else:
                handling.returned(result, answers)
    return handling


def outcome(handled: bool, failed: bool) -> Outcome:
    """How a frame whose message was dispatched ended, for :meth:`Peer.settle`.

    :param handled: whether any handler was there to run (a route matched, or catch-alls).
    :param failed: whether any handler raised.
    """
    if not handled:
        return Outcome.DROPPED
    return Outcome.FAILED if failed else Outcome.HANDLED
