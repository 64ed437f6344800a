"""The pure dispatch module (``_dispatch``) and the reply decision (``_protocol.answer``), alone:
no server, no transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

import distro_core as distro
from distro_core import _protocol
from distro_core._dispatch import Handling, finish_late, outcome, run_async, run_plain
from distro_core._handlers import Entry, entry
from distro_core.transport import Outcome

MSG = distro.message({"uri": "/customer/7", "verb": "POST"}, {"total": 12})


class Failures:
    """The ``failed`` callback: records who failed and gives the server's text."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, entry: Entry, msg: distro.Message, exc: Exception) -> str:
        assert msg is MSG
        self.names.append(entry.name)
        return f"{type(exc).__name__}: {exc}"


def returning(value: object, log: list[str] | None = None, name: str = "") -> Entry:
    def handler(msg: distro.Message) -> object:
        if log is not None:
            log.append(name)
        return value

    handler.__qualname__ = name or f"returning({value!r})"
    return entry(handler)


def raising(text: str) -> Entry:
    def handler(msg: distro.Message) -> None:
        raise ValueError(text)

    handler.__qualname__ = f"raising({text!r})"
    return entry(handler)


def later(value: object, log: list[str], name: str) -> Entry:
    """A plain handler returning a coroutine, which records when it is awaited."""

    async def resolve() -> object:
        log.append(name)
        await asyncio.sleep(0)
        if isinstance(value, Exception):
            raise value
        return value

    def handler(msg: distro.Message) -> Awaitable[object]:
        return resolve()

    handler.__qualname__ = name
    return entry(handler)


def async_returning(value: object, log: list[str], name: str) -> Entry:
    async def handler(msg: distro.Message) -> object:
        log.append(name)
        await asyncio.sleep(0)
        if isinstance(value, Exception):
            raise value
        return value

    handler.__qualname__ = name
    return entry(handler)


# -- run_plain ---------------------------------------------------------------------------------


def test_plain_handlers_answer_with_the_first_non_none_value_and_allocate_nothing() -> None:
    log: list[str] = []
    handlers = (
        returning(None, log, "a"),
        returning("b", log, "b"),
        returning("c", log, "c"),
    )
    assert run_plain((), handlers, MSG, Failures()) == "b"
    assert log == ["a", "b", "c"]  # every handler runs, in registration order


def test_plain_handlers_returning_none_answer_none() -> None:
    assert run_plain((), (returning(None), returning(None)), MSG, Failures()) is None
    assert run_plain((), (), MSG, Failures()) is None


def test_catch_alls_run_first_and_their_values_never_answer() -> None:
    log: list[str] = []
    catch_all = (returning("observed", log, "audit"),)
    handlers = (returning(None, log, "route"),)
    assert run_plain(catch_all, handlers, MSG, Failures()) is None
    assert log == ["audit", "route"]


def test_the_first_route_failure_is_the_error_and_a_value_is_still_kept() -> None:
    failures = Failures()
    handlers = (returning("v"), raising("first"), raising("second"))
    done = run_plain((), handlers, MSG, failures)
    assert isinstance(done, Handling)
    assert (done.value, done.error, done.failed, done.late) == ("v", "ValueError: first", True, [])
    assert failures.names == ["raising('first')", "raising('second')"]


def test_a_catch_all_failure_is_logged_and_marks_failed_but_is_not_the_error() -> None:
    failures = Failures()
    done = run_plain((raising("audit broke"),), (returning("v"),), MSG, failures)
    assert isinstance(done, Handling)
    assert (done.value, done.error, done.failed) == ("v", None, True)
    assert failures.names == ["raising('audit broke')"]


def test_results_from_the_first_awaitable_on_are_left_late_in_registration_order() -> None:
    log: list[str] = []
    first = later("late", log, "first")
    second = returning("plain", log, "second")
    done = run_plain((), (returning(None), first, second), MSG, Failures())
    assert isinstance(done, Handling)
    assert [(e, answers) for e, _, answers in done.late] == [(first, True), (second, True)]
    assert done.late[1][1] == "plain"  # a plain value after an awaitable waits its turn
    for _, result, _ in done.late:
        if asyncio.iscoroutine(result):
            result.close()


async def test_a_value_before_the_first_awaitable_still_answers() -> None:
    log: list[str] = []
    done = run_plain((), (returning("early"), later("late", log, "l")), MSG, Failures())
    assert isinstance(done, Handling) and done.value == "early"
    done = await finish_late(done, MSG, Failures())
    assert done.value == "early" and done.late == []


# -- finish_late -------------------------------------------------------------------------------


async def test_late_results_are_awaited_in_registration_order_and_the_first_value_answers() -> None:
    log: list[str] = []
    catch_all = (later("from the catch-all", log, "audit"),)
    handlers = (later(None, log, "a"), later("b", log, "b"), returning("c"), later("d", log, "d"))
    done = run_plain(catch_all, handlers, MSG, Failures())
    assert isinstance(done, Handling) and log == []  # nothing awaited yet
    done = await finish_late(done, MSG, Failures())
    assert log == ["audit", "a", "b", "d"]
    assert (done.value, done.error, done.failed, done.late) == ("b", None, False, [])


async def test_a_late_failure_names_its_handler_and_is_the_error() -> None:
    log: list[str] = []
    failures = Failures()
    handlers = (later(ValueError("late failure"), log, "failing"), later("v", log, "v"))
    done = await finish_late(run_plain((), handlers, MSG, failures), MSG, failures)
    assert (done.value, done.error, done.failed) == ("v", "ValueError: late failure", True)
    assert failures.names == ["failing"]


async def test_a_late_catch_all_failure_is_not_the_error() -> None:
    log: list[str] = []
    failures = Failures()
    catch_all = (later(ValueError("audit"), log, "audit"),)
    done = run_plain(catch_all, (returning("v"),), MSG, failures)
    done = await finish_late(done, MSG, failures)
    assert (done.value, done.error, done.failed) == ("v", None, True)
    assert failures.names == ["audit"]


async def test_a_plain_failure_while_results_wait_stays_the_error() -> None:
    # Plain handlers fail at once, awaitables later: as before the split, the failure seen
    # first (while calling) is the error.
    log: list[str] = []
    failures = Failures()
    handlers = (later(ValueError("later"), log, "late"), raising("now"))
    done = await finish_late(run_plain((), handlers, MSG, failures), MSG, failures)
    assert done.error == "ValueError: now" and failures.names == ["raising('now')", "late"]


# -- run_async ---------------------------------------------------------------------------------


async def test_async_handlers_run_in_turn_catch_alls_first_and_the_first_value_answers() -> None:
    log: list[str] = []
    catch_all = (async_returning("observed", log, "audit"),)
    handlers = (
        async_returning(None, log, "a"),
        returning("b", log, "b"),
        async_returning("c", log, "c"),
    )
    done = await run_async(catch_all, handlers, MSG, Failures())
    assert log == ["audit", "a", "b", "c"]
    assert (done.value, done.error, done.failed) == ("b", None, False)


async def test_async_failures_the_first_route_failure_is_the_error() -> None:
    log: list[str] = []
    failures = Failures()
    catch_all = (async_returning(ValueError("audit"), log, "audit"),)
    handlers = (
        async_returning(ValueError("first"), log, "first"),
        raising("second"),
        async_returning("v", log, "v"),
    )
    done = await run_async(catch_all, handlers, MSG, failures)
    assert (done.value, done.error, done.failed) == ("v", "ValueError: first", True)
    assert failures.names == ["audit", "first", "raising('second')"]


async def test_async_with_only_catch_alls_answers_nothing() -> None:
    log: list[str] = []
    done = await run_async((async_returning("x", log, "audit"),), (), MSG, Failures())
    assert (done.value, done.error, done.failed) == (None, None, False)


# -- outcome -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handled", "failed", "expected"),
    [
        (True, False, Outcome.HANDLED),
        (True, True, Outcome.FAILED),
        (False, False, Outcome.DROPPED),
    ],
)
def test_outcome(handled: bool, failed: bool, expected: Outcome) -> None:
    assert outcome(handled, failed) is expected


# -- the reply decision ------------------------------------------------------------------------

REQUEST = distro.message({"uri": "/customer/7", "verb": "PUT", "replyTo": "r"})


def answer(
    value: Any,
    error: str | None = None,
    routed: bool = True,
    limit: int | None = None,
    code: str | None = None,
) -> distro.Message:
    problem = None if error is None else _protocol.Problem(code or "handler_error", error)
    data = _protocol.answer(REQUEST, value, problem, routed, limit, "pigeon")
    assert data is not None
    reply = distro.parse(data)
    assert reply.headers["uri"] == "REPLY" and reply.headers["inReplyTo"] == REQUEST.id
    return reply


def test_answer_carries_the_value() -> None:
    reply = answer({"total": 12})
    assert reply.payload == {"total": 12} and "error" not in reply.headers


def test_answer_with_an_error_is_an_error_reply_even_with_a_value() -> None:
    reply = answer("ignored", "ValueError: boom")
    assert reply.headers["error"] == "ValueError: boom" and reply.payload is None


def test_answer_without_a_route_says_no_handler() -> None:
    assert answer(None, routed=False).headers["error"] == "no handler for PUT /customer/7"
    get = distro.message({"uri": "/x", "replyTo": "r"})
    data = _protocol.answer(get, None, None, False, None, "pigeon")
    assert data is not None and distro.parse(data).headers["error"] == "no handler for GET /x"


def test_answer_with_a_value_that_is_not_json_says_so() -> None:
    error = answer({1, 2}).headers["error"]
    assert error.startswith("the handler's return value cannot be sent: ")


def test_answer_too_large_for_the_transport_says_how_large() -> None:
    fits = _protocol.reply(REQUEST, "x" * 300)  # each reply has a fresh id of the same length
    assert answer("x" * 300, limit=len(fits)).payload == "x" * 300
    reply = answer("x" * 300, limit=len(fits) - 1)
    assert reply.headers["error"] == (
        f"the reply is {len(fits)} bytes encoded; pigeon carries at most {len(fits) - 1} "
        "bytes in one message"
    )
    assert reply.headers["code"] == "too_large"


def test_answer_codes_say_why() -> None:
    assert answer(None, "ValueError: boom").headers["code"] == "handler_error"
    assert answer(None, "late", code="handler_timeout").headers["code"] == "handler_timeout"
    assert answer(None, routed=False).headers["code"] == "no_handler"
    assert answer({1, 2}).headers["code"] == "not_serializable"
    assert "code" not in answer("fine").headers


def test_an_error_reply_over_its_limit_is_cut_to_fit_or_not_sent() -> None:
    text = "KeyError: " + "é" * 400
    full = _protocol.error_reply(REQUEST, text, "handler_error")
    assert full is not None and distro.parse(full).headers["error"] == text
    for limit in (len(full) - 1, 300, 200, 190):
        data = _protocol.error_reply(REQUEST, text, "handler_error", limit)
        assert data is not None and len(data) <= limit, limit
        reply = distro.parse(data)
        assert reply.payload is None and "payload" not in data.decode()  # null: left out
        assert len(reply.id) == 8
        cut = reply.headers["error"]
        if limit == len(full) - 1:  # the short id and no payload made room: whole, unmarked
            assert cut == text
            continue
        assert cut.endswith("\u2026") and text.startswith(cut[:-1]), limit
        assert reply.headers["code"] == "handler_error"
    # Too little room for a useful text: none (a client says what the code means).
    empty = _protocol.error_reply(REQUEST, "", "handler_error")
    assert empty is not None
    smallest = len(empty) - len(b',"payload":null') - 28  # and an id of 8 characters, not 36
    tight = _protocol.error_reply(REQUEST, text, "handler_error", smallest + 5)
    assert tight is not None and distro.parse(tight).headers["error"] == ""
    # No handler: never cut (the client knows its own verb and uri), only emptied.
    unrouted = _protocol.answer(REQUEST, None, None, False, None, "x", smallest + 40)
    assert unrouted is not None and distro.parse(unrouted).headers["error"] == ""
    # Not even an empty text fits: nothing is sent.
    assert _protocol.error_reply(REQUEST, text, "handler_error", smallest - 1) is None


def test_a_cut_text_escapes_are_counted_in_bytes() -> None:
    text = '\n\x01"' * 200  # each takes two to six bytes in JSON
    for limit in range(150, 400, 7):
        data = _protocol.error_reply(REQUEST, text, "handler_error", limit)
        assert data is None or len(data) <= limit


def test_answer_error_text_with_lone_surrogates_is_sent() -> None:
    text = "bad byte: " + b"\xff".decode("utf-8", "surrogateescape")
    assert answer(None, text).headers["error"].startswith("bad byte: ")
