"""distro.Service: handlers bound to a transport when served, startup and shutdown hooks, the
clients it opens with connect(), and serving until a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import wait_until


class Records(logging.Handler):
    """Keeps the records of the ``distro`` logger while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[str]:
        return [getattr(r, "event", "") for r in self.records]


@pytest.fixture
def records() -> Any:
    logger = logging.getLogger("distro")
    handler = Records()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_hooks_run_after_the_server_binds_and_after_it_drains() -> None:
    network = distro.MemoryNetwork()
    service = distro.Service("customers", transport="memory", network=network)
    events: list[str] = []
    release = asyncio.Event()

    @service.get("/slow")
    async def slow(msg: distro.Message) -> str:
        events.append("handler started")
        await release.wait()
        events.append("handler finished")
        return "done"

    @service.on_startup
    def first() -> None:
        events.append(f"startup 1, serving={service.is_serving}, port={service.address[1]}")

    @service.on_startup
    async def second() -> None:
        events.append("startup 2")

    @service.on_shutdown
    async def closing_first_registered() -> None:
        events.append(f"shutdown A, serving={service.is_serving}")

    @service.on_shutdown
    def closing_last_registered() -> None:
        events.append("shutdown B")

    service.bind(port=0)
    async with service:
        port = service.address[1]
        assert events == [f"startup 1, serving=True, port={port}", "startup 2"]
        async with service.factory.client(port=port, network=network) as client:
            pending = asyncio.ensure_future(client.request(distro.message({"uri": "/slow"}), 5))
            await wait_until(lambda: "handler started" in events)
            closing = asyncio.ensure_future(service.aclose())
            await asyncio.sleep(0.05)  # aclose is draining: no shutdown hook may have run
            assert events[-1] == "handler started"
            release.set()
            await closing
            assert (await pending).payload == "done"
    assert events[2:] == [
        "handler started",
        "handler finished",
        "shutdown B",  # reverse order, after the drain
        "shutdown A, serving=False",
    ]


async def test_messages_that_come_during_startup_wait_for_the_hooks() -> None:
    network = distro.MemoryNetwork()
    service = distro.Service("orders", transport="memory", network=network)
    opened = asyncio.Event()
    clients: dict[str, str] = {}

    @service.on_startup
    async def connect() -> None:
        await opened.wait()
        clients["customers"] = "open"

    @service.get("/plain")
    def plain(msg: distro.Message) -> str:
        return clients["customers"]

    @service.get("/async")
    async def asynchronous(msg: distro.Message) -> str:
        return clients["customers"]

    service.bind(port=0)
    starting = asyncio.ensure_future(service.start())
    await wait_until(lambda: service.server.is_serving)
    async with service.factory.client(port=service.address[1], network=network) as client:
        requests = [
            asyncio.ensure_future(client.request(distro.message({"uri": uri}), 5))
            for uri in ("/plain", "/async")
        ]
        await asyncio.sleep(0.05)
        assert not any(r.done() for r in requests)  # held while the hook runs
        opened.set()
        await starting
        assert [(await r).payload for r in requests] == ["open", "open"]
        # Once ready, handlers run at once.
        assert (await client.request(distro.message({"uri": "/plain"}), 5)).payload == "open"
    await service.aclose()


async def test_connect_inherits_the_transport_options_and_closes_after_shutdown() -> None:
    network = distro.MemoryNetwork()  # a client without it would not find the server
    customers = distro.Service("customers", transport="memory", network=network)
    customers.get("/customer/{id}", lambda msg: {"id": msg.params["id"]})
    orders = distro.Service("orders", transport="memory", network=network)
    seen: dict[str, Any] = {}

    @orders.on_startup
    async def connect() -> None:
        seen["client"] = await orders.connect(port=customers.address[1])

    @orders.on_shutdown
    async def still_open() -> None:
        reply = await seen["client"].request(distro.message({"uri": "/customer/7"}), 5)
        seen["during shutdown"] = reply.payload

    customers.bind(port=0)
    orders.bind(port=0)
    async with customers, orders:
        reply = await seen["client"].request(distro.message({"uri": "/customer/9"}), 5)
        assert reply.payload == {"id": "9"}
    assert seen["during shutdown"] == {"id": "7"}
    with pytest.raises(distro.StateError):  # closed after the shutdown hooks
        await seen["client"].send(distro.message({"uri": "/customer/9"}))


async def test_a_failing_startup_hook_closes_the_server_and_propagates(records: Records) -> None:
    service = distro.Service("broken", transport="memory")
    shutdowns: list[str] = []
    service.on_startup(lambda: None)

    @service.on_startup
    def fail() -> None:
        raise RuntimeError("no database")

    service.on_shutdown(lambda: shutdowns.append("ran"))
    server = service.bind(port=0)
    with pytest.raises(RuntimeError, match="no database"):
        await service.start()
    assert not server.is_serving
    assert shutdowns == []
    [failed] = [r for r in records.records if getattr(r, "event", "") == "startup_failed"]
    assert failed.exc_info is not None and failed.exc_info[0] is RuntimeError
    assert "fail" in failed.getMessage() and "no database" not in failed.getMessage()


async def test_a_failing_shutdown_hook_is_logged_and_the_others_run(records: Records) -> None:
    service = distro.Service("svc", transport="memory")
    ran: list[str] = []
    service.on_shutdown(lambda: ran.append("first registered"))

    @service.on_shutdown
    async def broken() -> None:
        raise ValueError("flush failed")

    service.bind(port=0)
    async with service:
        pass
    assert ran == ["first registered"]
    [failed] = [r for r in records.records if getattr(r, "event", "") == "shutdown_failed"]
    assert failed.exc_info is not None and failed.exc_info[0] is ValueError
    assert failed.levelno == logging.ERROR and getattr(failed, "service", None) == "svc"


async def test_routes_added_after_binding_are_served_and_options_merge() -> None:
    network = distro.MemoryNetwork()
    service = distro.Service("svc", transport="tcp", port=1)  # defaults, overridden below
    service.bind("memory", port=0, network=network)
    service.post("/late", lambda msg: "late")
    async with service, service.factory.client(port=service.address[1], network=network) as c:
        reply = await c.request(distro.message({"uri": "/late", "verb": "POST"}), 5)
    assert reply.payload == "late"
    assert service.factory.name == "memory"


def test_bad_bindings_are_refused() -> None:
    with pytest.raises(distro.StateError, match="no transport"):
        distro.Service("nowhere").bind()
    with pytest.raises(distro.TransportNotFound):
        distro.Service("x").bind("carrier-pigeon-2")
    with pytest.raises(TypeError, match="colour"):
        distro.Service("x", transport="tcp").bind(colour="blue")
    with pytest.raises(distro.StateError, match="not bound"):
        _ = distro.Service("x").factory
    with pytest.raises(ValueError, match="name"):
        distro.Service("")
    with pytest.raises(TypeError, match="hook"):
        distro.Service("x").on_startup(42)  # type: ignore[type-var]


async def test_serve_until_sigterm_logs_the_lifecycle(records: Records) -> None:
    service = distro.Service("svc", transport="tcp")
    service.get("/ping", lambda msg: "pong")

    async def kill_when_ready() -> None:
        await wait_until(lambda: service.is_serving and "ready" in records.events())
        os.kill(os.getpid(), signal.SIGTERM)

    killer = asyncio.ensure_future(kill_when_ready())
    await asyncio.wait_for(service.serve(port=0), 10)
    await killer
    events = records.events()
    assert events.index("started") < events.index("ready") < events.index("signal")
    assert events.index("signal") < events.index("draining") < events.index("closed")
    started = records.records[events.index("started")]
    assert started.port == service.address[1] != 0  # type: ignore[attr-defined]
    assert f":{service.address[1]}" in started.getMessage()
    assert "SIGTERM" in records.records[events.index("signal")].getMessage()


async def test_a_signal_while_starting_stops_the_start() -> None:
    service = distro.Service("svc", transport="memory")
    waiting = asyncio.Event()
    cancelled: list[bool] = []

    @service.on_startup
    async def forever() -> None:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def kill_when_waiting() -> None:
        await waiting.wait()
        os.kill(os.getpid(), signal.SIGINT)

    killer = asyncio.ensure_future(kill_when_waiting())
    await asyncio.wait_for(service.serve(port=0), 10)  # returns: no exception
    await killer
    assert cancelled == [True]
    assert not service.server.is_serving
