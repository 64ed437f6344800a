"""Structured errors (docs/wire-format.md, "Errors"): what the caller of a failing request
learns, through the public API, over the in-process transport and over udp (where error
replies are cut to the request's size)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

import distro_core as distro
from distro_core import _protocol


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("memory")


async def ask(
    factory: distro.Factory, server: distro.Server, uri: str, payload: Any = None
) -> distro.RemoteError:
    async with factory.client(port=server.address[1]) as client:
        with pytest.raises(distro.RemoteError) as info:
            await client.request(distro.message({"uri": uri}, payload), timeout=5)
    return info.value


async def test_a_reject_reaches_the_caller_as_it_is(
    factory: distro.Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "distro")
    server = factory.server(port=0)

    @server.get("/stock/{sku}")
    def stock(msg: distro.Message) -> None:
        raise distro.Reject("out_of_stock", f"{msg.params['sku']} is sold out", {"left": 0})

    async with server:
        error = await ask(factory, server, "/stock/x7")
    assert (error.code, error.remote, error.message) == (
        "out_of_stock",
        "x7 is sold out",
        "x7 is sold out",
    )
    assert error.details == {"left": 0}
    assert str(error) == f"request {error.message_id} failed remotely: x7 is sold out"
    # An expected failure: counted apart from errors, logged at INFO without a traceback.
    assert server.stats.rejected == 1 and server.stats.handler_errors == 0
    records = [r for r in caplog.records if getattr(r, "event", None) == "handler_rejected"]
    assert records and all(r.levelno == logging.INFO and not r.exc_info for r in records)
    assert "x7 is sold out" in records[0].getMessage()


async def test_an_unexpected_exception_is_an_internal_error_and_the_log_has_the_rest(
    factory: distro.Factory, caplog: pytest.LogCaptureFixture
) -> None:
    server = factory.server(port=0)

    @server.get("/secret")
    def secret(msg: distro.Message) -> None:
        raise RuntimeError("password=hunter2 at /srv/app/db.py")

    caplog.set_level(logging.ERROR, "distro")
    async with server:
        error = await ask(factory, server, "/secret")
    assert error.code == "handler_error"
    assert error.remote == f"internal error (message {error.message_id})"
    assert error.details is None
    assert "hunter2" not in str(error)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.message_id in record.getMessage() and "hunter2" in record.getMessage()
    assert record.exc_info is not None  # the traceback stays in the server's log


async def test_expose_errors_tells_the_exception_and_its_traceback(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0, expose_errors=True)

    @server.get("/fail")
    def fail(msg: distro.Message) -> None:
        raise KeyError("x")

    async with server:
        error = await ask(factory, server, "/fail")
    assert (error.code, error.remote) == ("handler_error", "KeyError: 'x'")
    assert error.details["type"] == "KeyError"
    assert "Traceback" in error.details["traceback"] and "in fail" in error.details["traceback"]


async def test_expose_errors_must_be_given_to_the_factory_as_an_option() -> None:
    # A core option: the transport never sees it (an unknown transport option is a TypeError).
    server = distro.create("tcp").server(port=0, expose_errors=True)
    assert server.transport.name == "tcp"


async def test_a_remote_error_from_a_downstream_call_passes_through_unnested(
    factory: distro.Factory,
) -> None:
    network = distro.MemoryNetwork()
    stock = factory.server(port=0, network=network)
    orders = factory.server(port=0, network=network)
    gateway = factory.server(port=0, network=network)

    @stock.get("/stock/{sku}")
    def level(msg: distro.Message) -> None:
        raise distro.Reject("out_of_stock", "sold out", {"sku": msg.params["sku"]})

    @stock.get("/broken")
    def broken(msg: distro.Message) -> None:
        raise ValueError("stock database down")

    async def forward(client: distro.Client, uri: str) -> Any:
        reply = await client.request(distro.message({"uri": uri}), timeout=5)
        return reply.payload

    async with (
        stock,
        orders,
        gateway,
        factory.client(port=stock.address[1], network=network) as to_stock,
        factory.client(port=orders.address[1], network=network) as to_orders,
    ):
        orders.get("/order/{sku}", lambda m: forward(to_stock, f"/stock/{m.params['sku']}"))
        orders.get("/order-broken", lambda m: forward(to_stock, "/broken"))
        gateway.get("/buy/{sku}", lambda m: forward(to_orders, f"/order/{m.params['sku']}"))
        gateway.get("/buy-broken", lambda m: forward(to_orders, "/order-broken"))
        async with factory.client(port=gateway.address[1], network=network) as client:
            with pytest.raises(distro.RemoteError) as info:
                await client.request(distro.message({"uri": "/buy/x7"}), timeout=5)
            three_hops = info.value
            with pytest.raises(distro.RemoteError) as info:
                await client.request(distro.message({"uri": "/buy-broken"}), timeout=5)
            internal = info.value
    assert (three_hops.code, three_hops.remote, three_hops.details) == (
        "out_of_stock",
        "sold out",
        {"sku": "x7"},
    )
    assert str(three_hops).count("failed remotely") == 1
    # The internal error names the message whose handler failed: the stock server's log has it.
    assert internal.code == "handler_error"
    assert internal.remote.startswith("internal error (message ")
    assert internal.message_id not in internal.remote  # the downstream request's id, not ours
    assert "database" not in internal.remote


def test_reject_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="empty"):
        distro.Reject("", "text")
    with pytest.raises(TypeError):
        distro.Reject(404, "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        distro.Reject("code", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        distro.Reject("code", "text", {"when": {1, 2}})
    with pytest.raises(ValueError, match="JSON"):
        distro.Reject("code", "text", float("nan"))
    reject = distro.Reject("code", "text", [1, "two"])
    assert (reject.code, reject.message, reject.details) == ("code", "text", [1, "two"])
    assert isinstance(reject, distro.DistroError)


# -- reading error replies from any implementation ----------------------------------------


REQUEST_ID = "9b2e4c1a-3f6d-4e8b-a1c2-7d5e9f0b3a64"


def read(headers: dict[str, Any]) -> distro.RemoteError:
    frame = json.dumps({"id": "r", "headers": {"uri": "REPLY", "inReplyTo": REQUEST_ID, **headers}})
    outcome = _protocol.reply_outcome(distro.parse(frame))
    assert outcome is not None
    request_id, payload, error = outcome
    assert (request_id, payload) == (REQUEST_ID, None)
    assert isinstance(error, distro.RemoteError)
    return error


@pytest.mark.parametrize(
    ("headers", "code", "text", "details"),
    [
        ({"error": "boom"}, None, "boom", None),  # an older server: no code
        ({"error": "boom", "code": 7}, None, "boom", None),
        ({"error": "boom", "code": "x", "errorDetails": [1]}, "x", "boom", [1]),
        ({"error": {"code": "x", "message": "m", "details": {"a": 1}}}, "x", "m", {"a": 1}),
        ({"error": {"message": "m"}, "code": "y"}, "y", "m", None),
        ({"error": {"message": "m", "code": ["not", "text"]}}, None, "m", None),
        ({"error": {"code": "x"}}, None, '{"code":"x"}', None),
        ({"error": ["a", 1]}, None, '["a",1]', None),
        ({"error": 42, "code": "z"}, "z", "42", None),
        ({"error": True}, None, "true", None),
        ({"error": "x" * 5000}, None, "x" * 5000, None),
    ],
)
def test_a_malformed_error_from_another_implementation_is_read_as_raw_text(
    headers: dict[str, Any], code: str | None, text: str, details: Any
) -> None:
    error = read(headers)
    assert (error.code, error.remote, error.details) == (code, text, details)


def test_a_huge_or_deep_malformed_error_is_cut_never_a_crash() -> None:
    error = read({"error": {"list": list(range(2000))}})
    assert error.remote.startswith('{"list":[0,1,2') and error.remote.endswith("\u2026")
    assert len(error.remote) == 1001
    deep: Any = "bottom"
    for _ in range(200):
        deep = [deep]
    assert read({"error": deep}).remote.startswith("[[[[")


async def test_a_client_given_a_malformed_error_raises_remote_error(
    factory: distro.Factory,
) -> None:
    # Another implementation's error reply, handed to the client as its transport would: the
    # request raises RemoteError with the raw text, and the client goes on.
    server = factory.server(port=0)
    release = asyncio.Event()
    started = asyncio.Event()

    @server.get("/slow")
    async def slow(msg: distro.Message) -> str:
        started.set()
        await release.wait()
        return "late"

    async with server, factory.client(port=server.address[1]) as client:
        msg = distro.message({"uri": "/slow"})
        task = asyncio.ensure_future(client.request(msg, timeout=5))
        await asyncio.wait_for(started.wait(), 5)
        frame = {"id": "r", "headers": {"uri": "REPLY", "inReplyTo": msg.id, "error": [1, {}]}}
        client.frame_received(json.dumps(frame).encode())
        with pytest.raises(distro.RemoteError) as info:
            await task
        release.set()
        assert (await client.request(distro.message({"uri": "/slow"}), timeout=5)).payload == "late"
    assert (info.value.remote, info.value.code) == ("[1,{}]", None)
    assert client.stats.late == 1  # the real reply to the first came after it had ended


async def test_over_udp_an_error_too_large_for_the_request_loses_its_details_first() -> None:
    # No amplification (docs/security.md): the error reply is cut to the request's size; the
    # details go first, then the text is cut; the code always stays.
    factory = distro.create("udp4")
    server = factory.server(port=0)

    @server.get("/refuse")
    def refuse(msg: distro.Message) -> None:
        raise distro.Reject("refused", "not today", {"why": "w" * 300})

    async with server:
        small = await ask(factory, server, "/refuse")
        roomy = await ask(factory, server, "/refuse", "." * 600)
    assert (small.code, small.remote, small.details) == ("refused", "not today", None)
    assert (roomy.code, roomy.remote, roomy.details) == ("refused", "not today", {"why": "w" * 300})
