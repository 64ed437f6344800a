"""Server and client behaviour beyond the shared suite, over the in-process transport."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until
from distro_core.transport import Segment


class ListLogger:
    """A logger that only has ``log``, as the contract allows."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args))


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("memory")


async def test_handler_failure_is_logged_with_the_message_id() -> None:
    logger = ListLogger()
    factory = distro.create("memory", logger=logger)
    server = factory.server(port=0)

    @server.post("/fail")
    def fail(msg: distro.Message) -> None:
        raise RuntimeError("disk full")

    after = Recorder()
    server.post("/after", after)
    async with server, factory.client(port=server.address[1]) as client:
        sent = distro.message({"uri": "/fail", "verb": "POST"})
        await client.send(sent)
        await client.send(distro.message({"uri": "/after", "verb": "POST"}))
        await after.wait_for(1)
    errors = [text for level, text in logger.lines if level == logging.ERROR]
    assert len(errors) == 1
    assert sent.id in errors[0] and "disk full" in errors[0] and "fail" in errors[0]
    assert server.stats.handler_errors == 1
    assert server.stats.handled == 2


async def test_routes_added_after_start_are_served(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    async with server, factory.client(port=server.address[1], network=network) as client:
        late = Recorder()
        server.patch("/late/{x}", late)
        await client.send(distro.message({"uri": "/late/1", "verb": "PATCH"}))
        [msg] = await late.wait_for(1)
    assert msg.params == {"x": "1"}


async def test_a_plain_function_returning_a_coroutine_is_awaited(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)

    async def compute(n: int) -> int:
        await asyncio.sleep(0)
        return n * 10

    server.get("/compute/{n}", lambda msg: compute(int(msg.params["n"])))
    async with server, factory.client(port=server.address[1], network=network) as client:
        reply = await client.request(distro.message({"uri": "/compute/4"}), timeout=5)
    assert reply.payload == 40


async def test_the_first_non_none_return_value_is_the_reply(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    server.get("/r", lambda m: None)
    server.get("/r", lambda m: "second")
    server.get("/r", lambda m: "third")
    async with server, factory.client(port=server.address[1], network=network) as client:
        reply = await client.request(distro.message({"uri": "/r"}), timeout=5)
    assert reply.payload == "second"


async def test_lifecycle_errors(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    async with server:
        with pytest.raises(distro.StateError):
            await server.start()
        with pytest.raises(distro.StateError, match="running loop"):
            server.run()
    await server.aclose()  # idempotent
    with pytest.raises(distro.StateError):
        await server.start()
    client = factory.client(port=1, network=network)
    with pytest.raises(distro.StateError):
        await client.send(distro.message({"uri": "/x"}))


async def test_sending_to_nobody_is_a_connection_error(factory: distro.Factory) -> None:
    async with factory.client(port=40000, network=distro.MemoryNetwork()) as client:
        with pytest.raises(distro.ConnectionError, match="40000"):
            await client.send(distro.message({"uri": "/x"}))


async def test_a_port_in_use_is_address_in_use(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    async with factory.server(port=4321, network=network):
        with pytest.raises(distro.AddressInUse, match="4321"):
            await factory.server(port=4321, network=network).start()


async def test_duplicate_request_ids_in_flight_are_refused(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    gate = asyncio.Event()

    @server.get("/wait")
    async def wait(msg: distro.Message) -> str:
        await gate.wait()
        return "done"

    async with server, factory.client(port=server.address[1], network=network) as client:
        msg = distro.message({"uri": "/wait"})
        first = asyncio.ensure_future(client.request(msg, timeout=5))
        await wait_until(lambda: server.stats.received == 1)
        with pytest.raises(distro.MessageError, match="already waiting"):
            await client.request(msg, timeout=5)
        gate.set()
        assert (await first).payload == "done"


async def test_closing_a_client_fails_its_pending_requests(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network, close_timeout=0.1)
    server.get("/never", lambda m: asyncio.Event().wait())
    async with server:
        client = factory.client(port=server.address[1], network=network)
        await client.open()
        pending = asyncio.ensure_future(client.request(distro.message({"uri": "/never"}), 5))
        await wait_until(lambda: server.stats.received == 1)
        await client.aclose()
        with pytest.raises(distro.ConnectionError):
            await pending


async def test_overload_beyond_the_backlog_is_dropped_and_counted(
    factory: distro.Factory,
) -> None:
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network, max_concurrency=1)
    gate = asyncio.Event()
    done = Recorder()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        await gate.wait()
        done(msg)

    async with server, factory.client(port=server.address[1], network=network) as client:
        for i in range(20):
            await client.send(distro.message({"uri": "/slow", "verb": "POST"}, i))
        await wait_until(lambda: server.stats.received >= 1)
        gate.set()
        await done.wait_for(1)
        # The memory transport holds frames while the server is paused, so nothing is lost:
        # back-pressure, not growth of the server's own backlog.
        await done.wait_for(20)
    assert sorted(done.payloads) == list(range(20))  # type: ignore[type-var]
    assert server.stats.dropped.get("overload", 0) == 0


def test_option_errors_are_clear(factory: distro.Factory) -> None:
    with pytest.raises(TypeError, match="prot"):
        factory.server(prot=1)
    with pytest.raises(ValueError, match="max_concurrency"):
        factory.server(port=0, max_concurrency=0)
    with pytest.raises(ValueError, match="max_queued"):
        factory.server(port=0, max_queued=0)
    with pytest.raises(ValueError, match="max_queued"):
        factory.server(port=0, max_queued=2.5)
    with pytest.raises(TypeError, match="both"):
        factory.server({"port": 0}, port=1)
    with pytest.raises(ValueError, match="port"):
        factory.client(port=70000)


def test_sync_client_used_unopened_is_a_state_error(factory: distro.Factory) -> None:
    client = factory.sync_client(port=1234)
    with pytest.raises(distro.StateError):
        client.send(distro.message({"uri": "/x"}))
    with pytest.raises(distro.StateError):
        client.request(distro.message({"uri": "/x"}))


def test_sync_client_request_to_a_server_in_another_thread() -> None:
    factory = distro.create("memory")
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    server.get("/hello/{who}", lambda m: f"hello {m.params['who']}")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(server.start())
        import threading

        runner = threading.Thread(target=loop.run_forever, daemon=True)
        runner.start()
        with factory.sync_client(port=server.address[1], network=network) as client:
            reply = client.request(distro.message({"uri": "/hello/ann"}), timeout=5)
            with pytest.raises(distro.RemoteError):
                client.request(distro.message({"uri": "/nope"}), timeout=5)
        assert reply.payload == "hello ann"
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


async def test_mapping_server_info_is_accepted() -> None:
    factory = distro.create("memory")
    network = distro.MemoryNetwork()
    server = factory.server({"port": 0, "network": network})
    got = Recorder()
    server.receive(got)
    async with server, factory.client({"port": server.address[1], "network": network}) as c:
        await c.send(distro.message({"uri": "/any"}))
        await got.wait_for(1)


async def test_awaitables_from_plain_handlers_keep_registration_order() -> None:
    logger = ListLogger()
    factory = distro.create("memory", logger=logger)
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network, expose_errors=True)

    async def later(value: object) -> object:
        await asyncio.sleep(0)
        return value

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("late failure")

    def audit(msg: distro.Message) -> object:
        return later("from the catch-all")  # observes; never answers

    def first(msg: distro.Message) -> object:
        return later("first")

    def failing(msg: distro.Message) -> object:
        return broken()

    server.receive(audit)
    server.get("/ordered", first)
    server.get("/ordered", lambda m: "second")
    server.get("/failing", failing)
    async with server, factory.client(port=server.address[1], network=network) as client:
        reply = await client.request(distro.message({"uri": "/ordered"}), timeout=5)
        with pytest.raises(distro.RemoteError, match="late failure"):
            await client.request(distro.message({"uri": "/failing"}), timeout=5)
    assert reply.payload == "first"
    [error] = [text for level, text in logger.lines if level == logging.ERROR]
    assert "failing" in error and "late failure" in error


def test_routes_are_reported_with_their_parsed_segments(factory: distro.Factory) -> None:
    server = factory.server(port=0)
    server.post("/Customer/{id}", lambda m: None)
    assert not server.has_catch_all
    [info] = server.routes
    assert (info.verb, info.pattern) == ("POST", "/Customer/{id}")
    assert info.segments == (Segment(""), Segment("customer"), Segment("id", param=True))
    server.receive(lambda m: None)
    assert server.has_catch_all


async def test_an_object_with_an_async_call_is_an_async_handler(factory: distro.Factory) -> None:
    # It must take a handler slot like an async def (shares, queues, deadlines), not be
    # taken for a plain function whose coroutine is awaited outside the scheduler's rules.
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network, handler_timeout=0.02)

    class Stuck:
        async def __call__(self, msg: distro.Message) -> None:
            await asyncio.Event().wait()

    server.get("/stuck", Stuck())
    [entry] = server._router.routes[0].handlers  # type: ignore[attr-defined]
    assert entry.is_async
    async with server, factory.client(port=server.address[1], network=network) as client:
        with pytest.raises(distro.RemoteError) as info:
            await client.request(distro.message({"uri": "/stuck"}), timeout=5)
    assert info.value.code == "handler_timeout"
