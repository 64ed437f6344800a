"""The ``distro_test`` fixture and TestClient (distro_core.testing, docs/testing.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import DistroTest, TestClient, wait_until


def shop(factory: distro.Factory, billing_port: int | None = None) -> distro.Server:
    """A small service under test: routes with parameters, a catch-all, a failing route, and a
    handler that calls another service."""
    server = factory.server(port=0)
    seen: list[str] = []
    server.state = seen  # type: ignore[attr-defined]  # for the tests to look at

    @server.receive
    def audit(msg: distro.Message) -> None:
        seen.append(msg.uri)

    @server.get("/items/{sku}/price")
    def price(msg: distro.Message) -> dict[str, Any]:
        return {"sku": msg.params["sku"], "verb": msg.verb, "price": 3}

    @server.post("/items/{sku}")
    def broken(msg: distro.Message) -> None:
        raise distro.Reject("out_of_stock", f"no {msg.params['sku']} left", {"sku": "x"})

    @server.post("/orders/{id}")
    async def order(msg: distro.Message) -> str:
        assert billing_port is not None
        async with factory.client(port=billing_port) as billing:
            await billing.send(distro.message({"uri": "/invoices", "verb": "POST"}, msg.payload))
        return f"order {msg.params['id']} placed"

    return server


async def test_a_request_goes_through_routing_with_params(distro_test: DistroTest) -> None:
    server = shop(distro_test.factory)
    async with distro_test.client(server) as client:
        reply = await client.request("/ITEMS/Ab-7/price")
        assert reply.payload == {"sku": "Ab-7", "verb": None, "price": 3}  # no verb: a GET
        assert reply.uri == "REPLY"
    assert server.state == ["/ITEMS/Ab-7/price"]  # type: ignore[attr-defined]


async def test_the_client_starts_and_closes_a_server_it_started(distro_test: DistroTest) -> None:
    server = shop(distro_test.factory)
    assert not server.is_serving
    async with distro_test.client(server):
        assert server.is_serving
    assert not server.is_serving


async def test_a_server_already_serving_stays_open(distro_test: DistroTest) -> None:
    server = shop(distro_test.factory)
    async with server:
        async with distro_test.client(server) as client:
            await client.request("/items/1/price")
        assert server.is_serving


async def test_errors_reach_the_test_as_a_caller_sees_them(distro_test: DistroTest) -> None:
    server = shop(distro_test.factory)
    async with distro_test.client(server) as client:
        with pytest.raises(distro.RemoteError) as rejected:
            await client.send("/items/z9", {"n": 1}, verb="POST")
        assert rejected.value.code == "out_of_stock"
        assert "no z9 left" in str(rejected.value)
        with pytest.raises(distro.RemoteError) as missing:
            await client.request("/nowhere", verb="DELETE")
        assert missing.value.code == "no_handler"


async def test_send_returns_after_the_handlers_ran(distro_test: DistroTest) -> None:
    server = distro_test.factory.server(port=0)
    done: list[object] = []

    @server.put("/slow/{n}")
    async def slow(msg: distro.Message) -> None:
        await asyncio.sleep(0.05)
        done.append((msg.params["n"], msg.payload))

    async with distro_test.client(server) as client:
        await client.send("/slow/4", [1, 2], verb="PUT")
        assert done == [("4", [1, 2])]  # no waiting: send returned once the handler finished


async def test_what_handlers_sent_is_recorded(distro_test: DistroTest) -> None:
    billing = distro_test.factory.server(port=0)
    invoices: list[object] = []
    billing.post("/invoices", lambda msg: invoices.append(msg.payload))
    async with billing:
        server = shop(distro_test.factory, billing_port=billing.address[1])
        async with distro_test.client(server) as client:
            reply = await client.request("/orders/12", {"total": 30}, verb="POST")
            assert reply.payload == "order 12 placed"
        await wait_until(lambda: invoices == [{"total": 30}], 2.0, "the invoice")
    # What the service sent, not what the test client sent.
    assert [(m.uri, m.verb, m.payload) for m in distro_test.sent] == [
        ("/invoices", "POST", {"total": 30})
    ]
    assert distro_test.sent_to("/INVOICES", "post") == distro_test.sent
    assert distro_test.sent_to("/invoices", "GET") == []


async def test_a_ready_message_and_headers(distro_test: DistroTest) -> None:
    server = distro_test.factory.server(port=0)
    server.get("/echo", lambda msg: {"tenant": msg.headers.get("tenant"), "id": msg.id})
    async with distro_test.client(server) as client:
        msg = distro.message({"uri": "/echo", "tenant": "acme"})
        assert (await client.request(msg)).payload == {"tenant": "acme", "id": msg.id}
        reply = await client.request("/echo", headers={"tenant": "b"})
        assert reply.payload["tenant"] == "b"
        with pytest.raises(TypeError):
            await client.request(msg, {"payload": "too"})


async def test_each_test_gets_a_fresh_network_part_one(distro_test: DistroTest) -> None:
    server = distro_test.factory.server(port=40001)
    async with server:
        assert server.address[1] == 40001


async def test_each_test_gets_a_fresh_network_part_two(distro_test: DistroTest) -> None:
    # The same fixed port again: part one's server is not in this test's network.
    server = distro_test.factory.server(port=40001)
    async with server:
        assert server.address[1] == 40001
    other = DistroTest()
    assert other.network is not distro_test.network


async def test_servers_of_the_factory_are_on_the_tests_network(distro_test: DistroTest) -> None:
    server = distro_test.factory.server(port=0)
    async with server:
        assert server.transport.network is distro_test.network  # type: ignore[attr-defined]
        with pytest.raises(distro.AddressInUse):
            async with distro_test.factory.server(port=server.address[1]):
                pass


async def test_a_non_memory_server_is_refused() -> None:
    server = distro.create("udp4").server(port=0)
    with pytest.raises(TypeError, match="memory"):
        TestClient(server)


async def test_the_client_must_be_entered(distro_test: DistroTest) -> None:
    client = distro_test.client(distro_test.factory.server(port=0))
    with pytest.raises(RuntimeError, match="async with"):
        await client.request("/x")


def test_pytest_does_not_collect_the_kit_classes() -> None:
    assert DistroTest.__test__ is False
    assert TestClient.__test__ is False


PROJECT = """
    import asyncio
    import distro_core as distro

    async def test_runs_without_an_async_plugin(distro_test):
        await asyncio.sleep(0)
        server = distro_test.factory.server(port=0)
        server.get("/a/{b}", lambda msg: msg.params["b"])
        async with distro_test.client(server) as client:
            assert (await client.request("/a/x")).payload == "x"

    async def test_fails_when_it_should(distro_test):
        await asyncio.sleep(0)
        assert False, "this one fails"

    async def test_not_ours():
        pass
"""


def test_a_project_without_configuration_runs_fixture_tests(tmp_path: Path) -> None:
    (tmp_path / "test_project.py").write_text(textwrap.dedent(PROJECT), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # no distro option
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert "test_runs_without_an_async_plugin PASSED" in out or "1 passed" in out, out
    assert "this one fails" in out, out
    assert "2 failed, 1 passed" in out, out
    # An async test that did not ask for distro is left alone: pytest's own answer, as without us.
    assert "async def functions are not natively supported" in out, out


async def test_a_service_is_bound_to_the_tests_network(distro_test: DistroTest) -> None:
    billing = distro_test.factory.server(port=0)
    billed: list[object] = []
    billing.post("/invoices", lambda msg: billed.append(msg.payload))
    service = distro.Service("orders", transport="tcp", port=8001)  # served over tcp in production
    hooks: list[str] = []

    @service.on_startup
    def up() -> None:
        hooks.append("up")

    @service.on_shutdown
    def down() -> None:
        hooks.append("down")

    @service.post("/orders/{id}")
    async def order(msg: distro.Message) -> str:
        invoices = await service.connect(port=billing.address[1])
        await invoices.send(distro.message({"uri": "/invoices", "verb": "POST"}, msg.params))
        return "ok"

    async with billing, distro_test.client(service) as client:
        assert hooks == ["up"]
        assert service.server.transport.network is distro_test.network  # type: ignore[attr-defined]
        assert (await client.request("/orders/5", verb="POST")).payload == "ok"
        await wait_until(lambda: billed == [{"id": "5"}], 2.0, "the invoice")
    assert hooks == ["up", "down"]
    assert [m.payload for m in distro_test.sent_to("/invoices")] == [{"id": "5"}]


async def test_a_test_client_alone_binds_a_service_to_memory() -> None:
    service = distro.Service("echo")
    service.get("/echo/{x}", lambda msg: msg.params["x"])
    async with TestClient(service) as client:
        assert service.server.transport.name == "memory"
        assert (await client.request("/echo/hi")).payload == "hi"
