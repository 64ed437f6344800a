"""The middleware API (docs/middleware.md): hooks, their order, headers, refusals, failures
contained, the chain built once, plugins through the ``distro_middleware`` hook."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

import distro_core as distro
from distro_core import hookspecs
from distro_core.middleware import (
    MIDDLEWARE_ENTRY_POINT_GROUP,
    Incoming,
    Middleware,
    Outgoing,
    Refuse,
    hookimpl,
)
from distro_core.testing import wait_until
from distro_core.transport import PluginWarning, Registry

POST = {"uri": "/orders", "verb": "POST"}


class Recorder(Middleware):
    """Writes ``(name, hook, detail)`` into a shared list."""

    def __init__(self, name: str, log: list[tuple[str, str, Any]]) -> None:
        self.name = name
        self.log = log

    def received(self, ctx: Incoming) -> None:
        self.log.append((self.name, "received", ctx.message.uri))

    def handled(self, ctx: Incoming) -> None:
        self.log.append((self.name, "handled", (ctx.value, ctx.failed, ctx.dropped)))

    def outgoing(self, frame: bytes) -> bytes:
        self.log.append((self.name, "outgoing", distro.parse(frame).headers["uri"]))
        return frame

    def sending(self, ctx: Outgoing) -> None:
        self.log.append((self.name, "sending", ctx.kind))

    def reply_received(self, ctx: Incoming) -> None:
        self.log.append((self.name, "reply_received", ctx.message.uri))

    def finished(self, ctx: Outgoing) -> None:
        reply = None if ctx.reply is None else ctx.reply.payload
        self.log.append((self.name, "finished", (ctx.kind, reply, type(ctx.error).__name__)))


async def test_hooks_run_in_onion_order_on_both_sides() -> None:
    log: list[tuple[str, str, Any]] = []
    factory = distro.create("tcp")
    server = factory.server(port=0, middleware=[Recorder("s1", log), Recorder("s2", log)])
    server.post("/orders", lambda msg: msg.payload * 2)
    async with server:
        options = {"address": server.address[0], "port": server.address[1]}
        mws = [Recorder("c1", log), Recorder("c2", log)]
        async with factory.client(options, middleware=mws) as client:
            reply = await client.request(distro.message(POST, 21))
    assert reply.payload == 42
    assert log == [
        ("c1", "sending", "request"),
        ("c2", "sending", "request"),
        ("c2", "outgoing", "/orders"),  # the first registered is outermost: its outgoing last
        ("c1", "outgoing", "/orders"),
        ("s1", "received", "/orders"),
        ("s2", "received", "/orders"),
        ("s2", "handled", (42, False, None)),
        ("s1", "handled", (42, False, None)),
        ("s2", "outgoing", "REPLY"),
        ("s1", "outgoing", "REPLY"),
        ("c1", "reply_received", "REPLY"),
        ("c2", "reply_received", "REPLY"),
        ("c2", "finished", ("request", 42, "NoneType")),
        ("c1", "finished", ("request", 42, "NoneType")),
    ]


class Headers(Middleware):
    """Adds a header on the client, reads it on the server and hands the handler another."""

    def sending(self, ctx: Outgoing) -> None:
        ctx.set_header("tenant", "acme")

    def received(self, ctx: Incoming) -> None:
        ctx.set_header("user", f"{ctx.headers['tenant']}/alice")
        ctx.remove_headers("tenant")


@pytest.mark.parametrize("transport", ["memory", "udp4"])
async def test_headers_added_on_both_sides(transport: str) -> None:
    factory = distro.create(transport)
    server = factory.server(port=0, middleware=[Headers()])
    seen: list[dict[str, Any]] = []
    server.post("/orders", lambda msg: seen.append(msg.headers))
    async with server:
        options = {"address": server.address[0], "port": server.address[1]}
        async with factory.client(options, middleware=[Headers()]) as client:
            sent = distro.message(POST, 1)
            await client.send(sent, confirm=True)
    assert seen[0]["user"] == "acme/alice" and "tenant" not in seen[0]
    assert sent.headers == POST  # the caller's message is not changed


class Gate(Middleware):
    def received(self, ctx: Incoming) -> None:
        if ctx.headers.get("token") != "ok":
            code = "unauthorized" if ctx.headers.get("tell") else None
            raise Refuse("no_token", "missing token", code=code, message="who are you?")


async def test_a_refused_message_is_counted_and_gets_a_reply_only_with_a_code() -> None:
    log: list[tuple[str, str, Any]] = []
    factory = distro.create("memory")
    server = factory.server(port=0, middleware=[Recorder("r", log), Gate()])
    handled: list[Any] = []
    server.post("/orders", lambda msg: handled.append(msg.payload))
    async with server, factory.client(port=server.address[1]) as client:
        with pytest.raises(distro.RequestTimeout):
            await client.request(distro.message(POST, 1), timeout=0.3)
        with pytest.raises(distro.RemoteError) as caught:
            await client.request(distro.message({**POST, "tell": True}, 2))
        await client.request(distro.message({**POST, "token": "ok"}, 3))
    assert caught.value.code == "unauthorized" and str(caught.value.remote) == "who are you?"
    assert handled == [3]
    assert server.stats.dropped == {"no_token": 2}
    # handled runs for every message received saw, handled or not
    assert [d for n, h, d in log if h == "handled"] == [
        (None, False, "no_token"),
        (None, False, "no_token"),
        (None, False, None),
    ]


class Boom(Middleware):
    def __init__(self, where: str) -> None:
        self.where = where

    def received(self, ctx: Incoming) -> None:
        if self.where == "received":
            raise ValueError("boom in received")

    def handled(self, ctx: Incoming) -> None:
        if self.where == "handled":
            raise ValueError("boom in handled")

    def outgoing(self, frame: bytes) -> bytes:
        if self.where == "outgoing":
            raise ValueError("boom in outgoing")
        return frame


async def test_a_middleware_that_raises_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    factory = distro.create("memory")
    servers = {
        where: factory.server(port=0, middleware=[Boom(where)])
        for where in ("received", "handled", "outgoing")
    }
    for server in servers.values():
        server.post("/orders", lambda msg: "fine")
    with caplog.at_level(logging.ERROR, logger="distro"):
        for where, server in servers.items():
            async with server, factory.client(port=server.address[1]) as client:
                if where == "received":
                    with pytest.raises(distro.RemoteError) as caught:
                        await client.request(distro.message(POST))
                    assert caught.value.code == "handler_error"
                    assert "boom" not in str(caught.value)  # nothing leaks
                elif where == "handled":
                    reply = await client.request(distro.message(POST))
                    assert reply.payload == "fine"
                else:
                    with pytest.raises(distro.RequestTimeout):
                        await client.request(distro.message(POST), timeout=0.3)
                # and the server goes on
                await client.send(distro.message(POST))
                await wait_until(lambda s=server: s.stats.received == 2, what="the second")
            assert server.stats.dropped["middleware_error"] >= 1, where
    assert servers["received"].stats.handled == 0
    assert servers["handled"].stats.handled == 2
    records = [r for r in caplog.records if getattr(r, "event", "") == "middleware_failed"]
    assert {str(r.exc_info[1]) for r in records if r.exc_info} == {
        "boom in received",
        "boom in handled",
        "boom in outgoing",
    }


class RefuseReplies(Middleware):
    def reply_received(self, ctx: Incoming) -> None:
        raise Refuse("distrusted", "every reply")


async def test_a_client_refuses_replies() -> None:
    factory = distro.create("memory")
    server = factory.server(port=0)
    server.post("/orders", lambda msg: 1)
    async with server:
        client = factory.client(port=server.address[1], middleware=[RefuseReplies()])
        async with client as c:
            with pytest.raises(distro.RequestTimeout):
                await c.request(distro.message(POST), timeout=0.2)
    assert c.stats.refused == {"distrusted": 1}


class Stamp(Middleware):
    def sending(self, ctx: Outgoing) -> None:
        ctx.set_header("stamp", ctx.kind)


async def test_over_several_servers_frames_go_through_the_chain() -> None:
    factory = distro.create("tcp")
    seen: list[str] = []
    first, second = factory.server(port=0), factory.server(port=0)
    for server in (first, second):
        server.post("/orders", lambda msg: seen.append(msg.headers["stamp"]))
    async with first, second:
        servers = [first.address, second.address]
        async with factory.client(servers=servers, middleware=[Stamp()]) as client:
            for _ in range(4):
                await client.send(distro.message(POST))
            await client.request(distro.message(POST))
            await wait_until(lambda: len(seen) == 5, what="five messages")
    assert sorted(seen) == ["request"] + ["send"] * 4
    assert first.stats.handled and second.stats.handled


class Nothing(Middleware):
    """Overrides no hook: no chain at all."""


async def test_no_chain_without_hooks_and_the_chain_is_built_once() -> None:
    factory = distro.create("memory")
    plain = factory.server(port=0, middleware=[Nothing()])
    async with plain:
        assert "frame_received" not in vars(plain)  # the server's own path, unchanged
    with_mw = factory.server(port=0, middleware=[Headers()])
    assert "frame_received" not in vars(with_mw)  # built when it starts, not before
    async with with_mw:
        assert "frame_received" in vars(with_mw)


async def test_middleware_option_is_checked() -> None:
    factory = distro.create("memory")
    with pytest.raises(TypeError, match="Middleware instances"):
        factory.server(port=0, middleware=[object()])
    with pytest.raises(TypeError, match="list of"):
        factory.client(port=1, middleware=Headers())


class _Plugin:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.log: list[tuple[str, str, Any]] = []

    @hookimpl
    def distro_middleware(self, side: str, transport: str) -> list[Middleware]:
        self.calls.append((side, transport))
        return [Recorder(f"plugin-{side}", self.log)]


async def test_a_plugin_adds_middleware_to_every_server_and_client_once() -> None:
    plugin = _Plugin()
    registry = Registry(entry_points=False)
    registry.register(plugin, name="recorder")
    factory = distro.create("memory", registry=registry)
    own: list[tuple[str, str, Any]] = []
    server = factory.server(port=0, middleware=[Recorder("own", own)])
    server.post("/orders", lambda msg: None)
    async with server, factory.client(port=server.address[1]) as client:
        for _ in range(20):
            await client.request(distro.message(POST))
    assert plugin.calls == [("server", "memory"), ("client", "memory")]  # not per message
    assert sum(1 for n, h, _ in plugin.log if h == "received") == 20
    assert sum(1 for n, h, _ in plugin.log if n == "plugin-client" and h == "sending") == 20
    # the plugins' middleware is outside the middleware= given: it sees a message first
    first = next(i for i, (n, h, _) in enumerate(plugin.log) if h == "received")
    assert plugin.log[first][0] == "plugin-server" and own[0][1] == "received"


def test_the_hook_is_documented_and_specified() -> None:
    assert hookspecs.distro_middleware.__doc__
    assert "distro_middleware" in hookspecs.__all__
    assert hookspecs.MIDDLEWARE_ENTRY_POINT_GROUP == "distro.middleware"


async def test_sync_client_goes_through_the_chain() -> None:
    factory = distro.create("tcp")
    got: list[str] = []
    server = factory.server(port=0)
    server.post("/orders", lambda msg: got.append(msg.headers["stamp"]) or "ok")
    async with server:
        options = {"address": server.address[0], "port": server.address[1]}

        def call() -> Any:
            with factory.sync_client(options, middleware=[Stamp()]) as client:
                return client.request(distro.message(POST)).payload

        assert await asyncio.get_running_loop().run_in_executor(None, call) == "ok"
    assert got == ["request"]


STAMP_PLUGIN = """
from distro_core.middleware import Middleware, hookimpl


class Stamp(Middleware):
    def sending(self, ctx):
        ctx.set_header("via", "installed-plugin")


@hookimpl
def distro_middleware(side, transport):
    return [Stamp()] if side == "client" else None
"""

BROKEN_PLUGIN = "raise RuntimeError('cannot import me')\n"


def _install(root: Path, monkeypatch: pytest.MonkeyPatch, plugins: dict[str, str]) -> None:
    """An installed distribution whose ``distro.middleware`` entry points are ``plugins``."""
    info = root / "distro_stamp-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: distro-stamp\nVersion: 1.0\n")
    lines = [f"[{MIDDLEWARE_ENTRY_POINT_GROUP}]"]
    for name, source in plugins.items():
        module = f"distro_stamp_{name}"
        (root / f"{module}.py").write_text(source)
        monkeypatch.delitem(sys.modules, module, raising=False)
        lines.append(f"{name} = {module}")
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(root))


async def test_an_installed_plugin_is_found_by_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, monkeypatch, {"stamp": STAMP_PLUGIN, "broken": BROKEN_PLUGIN})
    registry = Registry()  # reads entry points, as the default registry does
    factory = distro.create("memory", registry=registry)
    with pytest.warns(PluginWarning, match="'broken'.*cannot import me"):
        server = factory.server(port=0)  # the group is read when the first one is made
    server.get("/via", lambda msg: msg.headers.get("via"))
    async with server, factory.client(port=server.address[1]) as client:
        reply = await client.request(distro.message({"uri": "/via"}))
    assert reply.payload == "installed-plugin"


class ClientFaults(Middleware):
    def __init__(self, where: str) -> None:
        self.where = where

    def sending(self, ctx: Outgoing) -> None:
        if self.where == "sending":
            raise PermissionError("not allowed to send")

    def finished(self, ctx: Outgoing) -> None:
        if self.where == "finished":
            raise ValueError("boom in finished")


async def test_client_hooks_that_raise(caplog: pytest.LogCaptureFixture) -> None:
    factory = distro.create("memory")
    server = factory.server(port=0)
    server.post("/orders", lambda msg: "fine")
    async with server:
        port = server.address[1]
        async with factory.client(port=port, middleware=[ClientFaults("sending")]) as client:
            with pytest.raises(PermissionError):  # the caller's own: it reaches the caller
                await client.request(distro.message(POST))
        async with factory.client(port=port, middleware=[ClientFaults("finished")]) as client:
            with caplog.at_level(logging.ERROR, logger="distro"):
                reply = await client.request(distro.message(POST))  # contained: logged
    assert reply.payload == "fine" and server.stats.handled == 1
    assert client.stats.refused == {"middleware_error": 1}
    assert any("boom in finished" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_the_servers_context_sets_every_field_of_incoming() -> None:
    """The server builds its per-message context without calling Incoming.__init__ (one call
    fewer per message): it must still set every field."""
    from distro_core._middleware_server import _Context

    msg = distro.message(POST)
    ctx = _Context(msg, msg.to_bytes())
    for name in Incoming.__slots__:
        assert getattr(ctx, name) == getattr(Incoming(msg, msg.to_bytes()), name), name
