"""Logs an operator can use: a handler's exception is the record's exc_info (not text pasted in
the message), every distro record carries structured fields a JSON formatter shows, the
lifecycle is logged at INFO, and rate-limited lines keep their counts."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from typing import Any

import pytest

import distro_core as distro
from distro_core._logging import RateLimitedLog
from distro_core.cli._logs import JsonFormatter
from distro_core.testing import wait_until


@pytest.fixture
def json_lines() -> Any:
    """The ``distro`` logger's records, as the JSON formatter of ``distro run`` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("distro")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    try:
        yield read
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_a_failing_handler_logs_its_exception_as_exc_info(json_lines: Any) -> None:
    factory = distro.create("tcp")
    server = factory.server(port=0)

    @server.post("/invoice/{id}")
    def invoice(msg: distro.Message) -> None:
        raise KeyError("missing")

    async with server, factory.client(port=server.address[1]) as client:
        sent = distro.message({"uri": "/invoice/7", "verb": "POST"})
        with pytest.raises(distro.RemoteError):
            await client.request(sent, timeout=5)
    [failed] = [line for line in json_lines() if line.get("event") == "handler_failed"]
    assert failed["level"] == "ERROR"
    assert failed["exc_type"] == "KeyError"
    assert "Traceback (most recent call last)" in failed["traceback"]
    assert "raise KeyError" in failed["traceback"]
    assert "Traceback" not in failed["message"]  # the text stays one line
    assert failed["message"].count("\n") == 0
    assert failed["msg_id"] == sent.id
    assert (failed["uri"], failed["verb"], failed["transport"]) == ("/invoice/7", "POST", "tcp")
    assert "invoice" in failed["handler"]
    assert failed["suppressed"] == 0


async def test_every_record_carries_an_event_and_the_transport(json_lines: Any) -> None:
    factory = distro.create("udp4")
    server = factory.server(port=0, close_timeout=2)
    server.post("/known", lambda msg: None)
    running = asyncio.Event()
    release = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        running.set()
        await release.wait()

    async with server, factory.client(port=server.address[1]) as client:
        await client.send(distro.message({"uri": "/nowhere", "verb": "POST"}))
        await client.send(distro.message({"uri": "/slow", "verb": "POST"}))
        await asyncio.wait_for(running.wait(), 5)
        await wait_until(lambda: server.stats.dropped.get("no_route") == 1)
        asyncio.get_running_loop().call_later(0.2, release.set)
    lines = json_lines()
    assert lines and all(line["transport"] == "udp4" and line.get("event") for line in lines)
    by_event = {line["event"]: line for line in lines}
    started = by_event["started"]
    assert started["port"] == server.address[1] and started["level"] == "INFO"
    assert f"127.0.0.1:{server.address[1]}" in started["message"]
    assert by_event["dropped"]["reason"] == "no_route"
    draining = by_event["draining"]
    assert (draining["running"], draining["queued"]) == (1, 0)
    assert "1 handler(s) still running" in draining["message"]
    closed = by_event["closed"]
    assert closed["stats"]["received"] == 2 and closed["stats"]["dropped"] == {"no_route": 1}
    assert [line["event"] for line in lines][-1] == "closed"


async def test_a_logger_without_keywords_gets_the_traceback_in_the_text() -> None:
    class Plain:
        def __init__(self) -> None:
            self.lines: list[tuple[int, str]] = []

        def log(self, level: int, msg: str, *args: Any) -> None:
            self.lines.append((level, msg % args))

    logger = Plain()
    factory = distro.create("memory", logger=logger)
    server = factory.server(port=0)
    server.post("/x", lambda msg: 1 / 0)
    async with server, factory.client(port=server.address[1]) as client:
        with pytest.raises(distro.RemoteError):
            await client.request(distro.message({"uri": "/x", "verb": "POST"}), 5)
    [error] = [text for level, text in logger.lines if level == logging.ERROR]
    assert "ZeroDivisionError: division by zero" in error
    assert "Traceback (most recent call last)" in error


def test_rate_limited_lines_keep_their_counts_in_text_and_fields() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("distro.test.ratelimit")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.DEBUG)
    quiet = RateLimitedLog(logger, burst=2, interval=0.2)
    for n in range(7):
        quiet.log("bad", logging.WARNING, "bad frame %d", n, extra={"reason": "invalid"})
    assert [r.getMessage() for r in records] == ["bad frame 0", "bad frame 1"]
    time.sleep(0.25)  # the interval is a clock: wait it out
    quiet.log("bad", logging.WARNING, "bad frame %d", 7, extra={"reason": "invalid"})
    last = records[-1]
    assert last.getMessage() == "bad frame 7 (and 5 more like it suppressed)"
    assert last.suppressed == 5  # type: ignore[attr-defined]
    assert last.reason == "invalid" and last.event == "bad"  # type: ignore[attr-defined]
