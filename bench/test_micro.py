"""Micro-benchmarks of distro's hot path, with the raw equivalents measured in the same run.

Not part of the test suite (``bench/`` is outside ``testpaths``). Run with::

    .venv/bin/python bench/run.py --micro
    .venv/bin/python -m pytest bench/test_micro.py --benchmark-only

Groups: ``create`` (a message built from headers and payload, fresh id), ``encode`` (the wire
form of a parsed message), ``decode`` (bytes to a message), ``route`` (finding the route with
1, 100 and 10,000 routes registered), ``dispatch`` (a frame handed to ``Server.frame_received``
with a plain handler and a fake peer: decode, route, call, no I/O).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core._routing import Router  # the router is private; routing is measured directly

HEADERS = {"uri": "/customer/42/orders", "verb": "POST"}
PAYLOAD = {"seq": 123456, "customer": "c-42", "qty": 3, "total": 99.5}
WIRE = distro.message(HEADERS, PAYLOAD).to_bytes()


# -- create ------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="create")
def test_create_distro_message(benchmark: Any) -> None:
    msg = benchmark(distro.message, HEADERS, PAYLOAD)
    assert msg.payload == PAYLOAD


@pytest.mark.benchmark(group="create")
def test_create_raw_uuid4_json_dumps(benchmark: Any) -> None:
    def build() -> bytes:
        return json.dumps(
            {"id": str(uuid.uuid4()), "headers": HEADERS, "payload": PAYLOAD},
            separators=(",", ":"),
        ).encode()

    assert json.loads(benchmark(build))["payload"] == PAYLOAD


@pytest.mark.benchmark(group="create")
def test_create_raw_uuid4_orjson_dumps(benchmark: Any) -> None:
    def build() -> bytes:
        return orjson.dumps({"id": str(uuid.uuid4()), "headers": HEADERS, "payload": PAYLOAD})

    assert orjson.loads(benchmark(build))["payload"] == PAYLOAD


# -- encode ------------------------------------------------------------------------------------


# to_bytes() keeps the encoding it makes, so each round gets a message never encoded, made
# (untimed) by the setup; one call per round, so nothing piles up: kept alive, each orjson
# result holds a ~4 KiB buffer, and a loop over thousands of them would time page faults.
ENCODE_ROUNDS = 20_000


@pytest.mark.benchmark(group="encode")
def test_encode_distro_to_bytes(benchmark: Any) -> None:
    result = benchmark.pedantic(
        distro.Message.to_bytes,
        setup=lambda: ((distro.parse(WIRE),), {}),
        rounds=ENCODE_ROUNDS,
        warmup_rounds=100,
    )
    assert result == WIRE


@pytest.mark.benchmark(group="encode")
def test_encode_raw_orjson_dumps(benchmark: Any) -> None:
    result = benchmark.pedantic(
        orjson.dumps,
        setup=lambda: ((orjson.loads(WIRE),), {}),
        rounds=ENCODE_ROUNDS,
        warmup_rounds=100,
    )
    assert result == WIRE


# -- decode ------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="decode")
def test_decode_distro_parse(benchmark: Any) -> None:
    assert benchmark(distro.parse, WIRE).payload == PAYLOAD


@pytest.mark.benchmark(group="decode")
def test_decode_raw_orjson_loads(benchmark: Any) -> None:
    assert benchmark(orjson.loads, WIRE)["payload"] == PAYLOAD


@pytest.mark.benchmark(group="decode")
def test_decode_raw_json_loads(benchmark: Any) -> None:
    assert benchmark(json.loads, WIRE)["payload"] == PAYLOAD


# -- route -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 100, 10_000])
@pytest.mark.parametrize("kind", ["static", "param"])
@pytest.mark.benchmark(group="route")
def test_route(benchmark: Any, kind: str, count: int) -> None:
    router: Router[str] = Router()
    for i in range(count):
        if kind == "static":
            router.add("POST", f"/service{i}/orders", f"h{i}")
        else:
            router.add("POST", f"/service{i}/orders/{{id}}", f"h{i}")
    target = count // 2
    uri = f"/service{target}/orders" + ("/42" if kind == "param" else "")
    route, params = benchmark(router.match, "POST", uri)
    assert route is not None and route.handlers == (f"h{target}",)
    assert params == ({"id": "42"} if kind == "param" else {})


# -- dispatch ----------------------------------------------------------------------------------


class _FakePeer(kit.Peer):
    """A peer that keeps replies in memory: dispatch without I/O."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        super().__init__("127.0.0.1")
        self.sent = 0

    def send(self, data: bytes, reply_to: str) -> None:
        self.sent += 1


@pytest.fixture
def served() -> Iterator[tuple[distro.Server, list[int]]]:
    """A started memory server with plain handlers on a static and a {param} route."""
    server = distro.create("memory").server(port=0)
    calls = [0]

    @server.post("/customer/42/orders")
    def static(msg: distro.Message) -> Any:
        calls[0] += 1
        return msg.payload

    @server.post("/customer/{id}")
    def param(msg: distro.Message) -> None:
        calls[0] += 1

    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    try:
        yield server, calls
    finally:
        loop.run_until_complete(server.aclose())
        loop.close()


@pytest.mark.benchmark(group="dispatch")
def test_dispatch_static_route(benchmark: Any, served: tuple[distro.Server, list[int]]) -> None:
    server, calls = served
    benchmark(server.frame_received, WIRE, _FakePeer())
    assert calls[0] > 0 and not server.stats.dropped


@pytest.mark.benchmark(group="dispatch")
def test_dispatch_param_route(benchmark: Any, served: tuple[distro.Server, list[int]]) -> None:
    server, calls = served
    data = distro.message({"uri": "/customer/42", "verb": "POST"}, PAYLOAD).to_bytes()
    benchmark(server.frame_received, data, _FakePeer())
    assert calls[0] > 0 and not server.stats.dropped


@pytest.mark.benchmark(group="dispatch")
def test_dispatch_request_with_reply(
    benchmark: Any, served: tuple[distro.Server, list[int]]
) -> None:
    server, calls = served
    request = {"uri": "/customer/42/orders", "verb": "POST", "replyTo": "bench"}
    data = distro.message(request, PAYLOAD).to_bytes()
    peer = _FakePeer()
    benchmark(server.frame_received, data, peer)
    assert peer.sent == calls[0] and server.stats.replies_sent == peer.sent


@pytest.mark.benchmark(group="dispatch")
def test_dispatch_raw_loads_and_call(benchmark: Any) -> None:
    """The raw equivalent of a dispatch: decode, find the handler in a dict, call it."""
    calls = [0]

    def handler(obj: dict[str, Any]) -> None:
        calls[0] += 1

    table = {("POST", "/customer/42/orders"): handler}

    def dispatch(data: bytes) -> None:
        obj = orjson.loads(data)
        headers = obj["headers"]
        table[(headers["verb"], headers["uri"])](obj)

    benchmark(dispatch, WIRE)
    assert calls[0] > 0
