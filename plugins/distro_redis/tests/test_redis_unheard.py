"""Sends over redis pub/sub that no server heard: one-way ones are counted in the client's
stats and logged; confirmed ones fail at once with ``no_handler``."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until


def post(uri: str, payload: Any = None) -> distro.Message:
    return distro.message({"uri": uri, "verb": "POST"}, payload)


async def test_a_one_way_send_nobody_hears_is_counted_and_logged(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    factory = distro.create("redis")
    async with factory.client(options) as client:
        assert client.stats.unheard == 0
        await client.send(post("/nobody/listens"))
        await wait_until(lambda: client.stats.unheard == 1, what="1 unheard send")
        assert client.stats.sent == 1
    channel = f"{options['prefix']}/NOBODY/LISTENS.POST"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("reached no server" in line and channel in line for line in lines), lines


async def test_a_send_a_server_hears_is_not_counted(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/heard", got)
    async with server, factory.client(options) as client:
        for n in range(20):
            await client.send(post("/heard", n))
        await got.wait_for(20)
        # A send nobody hears, after them: once it is counted, Redis has answered every
        # PUBLISH before it too (it answers in order), so the count is final.
        await client.send(post("/nobody"))
        await wait_until(lambda: client.stats.unheard >= 1, what="the unheard marker")
        assert client.stats.unheard == 1
        assert client.stats.sent == 21
    assert [m.payload for m in got.messages] == list(range(20))
    lines = [r.getMessage() for r in caplog.records if "reached no server" in r.getMessage()]
    assert lines and all("/HEARD.POST" not in line for line in lines), lines


async def test_a_confirmed_send_nobody_hears_fails_at_once(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    async with factory.client(options) as client:
        started = time.monotonic()
        with pytest.raises(distro.RemoteError) as caught:
            await client.send(post("/nobody"), confirm=True, timeout=2)
        took = time.monotonic() - started
    assert caught.value.code == "no_handler"
    assert "no server" in str(caught.value)
    assert took < 1.0, f"took {took:.2f} s: it waited instead of failing at once"
    # A confirmed send is a request: it is not counted as an unheard one-way send.
    assert client.stats.unheard == 0


async def test_a_confirmed_send_a_server_hears_is_confirmed(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/heard", got)
    async with server, factory.client(options) as client:
        await client.send(post("/heard", "once"), confirm=True, timeout=2)
        assert [m.payload for m in got.messages] == ["once"]
        assert client.stats.unheard == 0
