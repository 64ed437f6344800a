"""Typed payloads (distro_core/_typed.py): handlers annotated with attrs classes, dataclasses,
pydantic models and msgspec Structs get the payload validated and converted; what they return
is converted back; a payload that does not validate never reaches them."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import attrs
import pytest

import distro_core as distro
from distro_core import _typed

pydantic = pytest.importorskip("pydantic")
msgspec = pytest.importorskip("msgspec")
pytest.importorskip("cattrs")


@attrs.define
class AttrsOrder:
    sku: str
    qty: int


@dataclasses.dataclass
class DataOrder:
    sku: str
    qty: int


class PydanticOrder(pydantic.BaseModel):  # type: ignore[misc]
    sku: str
    qty: int


class StructOrder(msgspec.Struct):  # type: ignore[misc]
    sku: str
    qty: int


@attrs.define
class Line:
    sku: str
    qty: int


@attrs.define
class Basket:
    customer: str
    lines: list[Line]


class Plain:
    """No converter knows it."""


MODELS = [AttrsOrder, DataOrder, PydanticOrder, StructOrder]


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("memory")


async def call(
    factory: distro.Factory, server: distro.Server, uri: str, payload: Any
) -> distro.Message:
    async with factory.client(port=server.address[1]) as client:
        return await client.request(distro.message({"uri": uri, "verb": "POST"}, payload), 5)


async def refused(
    factory: distro.Factory, server: distro.Server, uri: str, payload: Any
) -> distro.RemoteError:
    with pytest.raises(distro.RemoteError) as info:
        await call(factory, server, uri, payload)
    return info.value


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
async def test_the_payload_is_converted_and_the_returned_model_converted_back(
    factory: distro.Factory, model: Any
) -> None:
    server = factory.server(port=0)
    got: list[Any] = []

    def double(order: model) -> model:  # type: ignore[valid-type]
        got.append(order)  # (``model`` is resolved from the closure: the handler uses it)
        return model(sku=order.sku.upper(), qty=order.qty * 2)

    async def with_message(msg: distro.Message, order: Any) -> distro.Reply:
        got.append((msg.params["id"], order))
        return distro.Reply(order, headers={"seen": msg.params["id"]})

    with_message.__annotations__["order"] = model  # not a closure variable: set as an object

    server.post("/double", double)
    server.post("/order/{id}", with_message)
    async with server:
        reply = await call(factory, server, "/double", {"sku": "ab", "qty": 2})
        other = await call(factory, server, "/order/7", {"sku": "cd", "qty": 1})
    assert reply.payload == {"sku": "AB", "qty": 4}
    assert other.payload == {"sku": "cd", "qty": 1} and other.headers["seen"] == "7"
    assert got == [model(sku="ab", qty=2), ("7", model(sku="cd", qty=1))]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
async def test_a_payload_that_does_not_validate_never_reaches_the_handler(
    factory: distro.Factory, model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = factory.server(port=0)
    calls: list[Any] = []

    def take(order: Any) -> None:
        calls.append(order)

    take.__annotations__["order"] = model

    server.post("/order", take)
    caplog.set_level(logging.WARNING, "distro")
    async with server:
        error = await refused(factory, server, "/order", {"sku": "ab", "qty": "many"})
        missing = await refused(factory, server, "/order", {"sku": "ab"})
        async with factory.client(port=server.address[1]) as client:  # one way: counted too
            await client.send(distro.message({"uri": "/order", "verb": "POST"}, []))
            await client.send(
                distro.message({"uri": "/order", "verb": "POST"}, {"sku": "a", "qty": 1})
            )
            await distro.testing.wait_until(lambda: len(calls) == 1, what="the valid one")
    assert calls == [model(sku="a", qty=1)]
    assert error.code == "invalid_payload" and missing.code == "invalid_payload"
    assert error.details["type"] == model.__name__
    assert [e["field"] for e in error.details["errors"]] == ["qty"]
    assert "qty" in error.remote and model.__name__ in error.remote
    assert [e["field"] for e in missing.details["errors"]] == ["qty"]
    stats = server.stats
    assert stats.dropped == {"invalid_payload": 3}
    assert stats.handler_errors == 0
    logged = [r.getMessage() for r in caplog.records if "invalid_payload" in r.getMessage()]
    assert len(logged) == 3 and "qty" in logged[0] and "/order" in logged[0]


async def test_nested_fields_are_named_by_their_path(factory: distro.Factory) -> None:
    server = factory.server(port=0)

    def basket(basket: Basket) -> int:
        return sum(line.qty for line in basket.lines)

    def pydantic_basket(basket: PydanticBasket) -> int:
        return sum(line.qty for line in basket.lines)

    server.post("/basket", basket)
    server.post("/p-basket", pydantic_basket)
    good = {"customer": "c", "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}
    bad = {"customer": "c", "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": "x"}]}
    async with server:
        assert (await call(factory, server, "/basket", good)).payload == 3
        assert (await call(factory, server, "/p-basket", good)).payload == 3
        error = await refused(factory, server, "/basket", bad)
        p_error = await refused(factory, server, "/p-basket", bad)
    assert [e["field"] for e in error.details["errors"]] == ["lines[1].qty"]
    assert [e["field"] for e in p_error.details["errors"]] == ["lines[1].qty"]


class PydanticLine(pydantic.BaseModel):  # type: ignore[misc]
    sku: str
    qty: int


class PydanticBasket(pydantic.BaseModel):  # type: ignore[misc]
    customer: str
    lines: list[PydanticLine]


async def test_a_handler_taking_the_message_is_called_as_it_is(factory: distro.Factory) -> None:
    server = factory.server(port=0)

    def plain(msg):  # type: ignore[no-untyped-def]
        return msg.payload

    def annotated(msg: distro.Message) -> Any:
        return msg.payload

    def anything(msg: Any) -> Any:
        return msg.payload

    def with_default(msg: distro.Message, extra: int = 3) -> Any:
        return extra

    for handler in (plain, annotated, anything, with_default):
        assert _typed.typed(handler, False) is None  # registered as it is: no wrapper
    server.post("/plain", plain)
    server.post("/default", with_default)
    server.post("/raw", lambda msg, payload: payload)  # two parameters, the second raw
    async with server:
        assert (await call(factory, server, "/plain", {"a": 1})).payload == {"a": 1}
        assert (await call(factory, server, "/default", None)).payload == 3
        assert (await call(factory, server, "/raw", [1])).payload == [1]


async def test_a_model_return_annotation_converts_a_plain_handlers_value(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0)

    def make(msg: distro.Message) -> DataOrder:
        return DataOrder(sku=msg.payload, qty=1)

    async def make_async(msg: distro.Message) -> StructOrder:
        return StructOrder(sku=msg.payload, qty=2)

    server.post("/make", make)
    server.post("/make-async", make_async)
    async with server:
        assert (await call(factory, server, "/make", "z")).payload == {"sku": "z", "qty": 1}
        assert (await call(factory, server, "/make-async", "y")).payload == {"sku": "y", "qty": 2}


async def test_async_and_awaitable_returning_typed_handlers(factory: distro.Factory) -> None:
    server = factory.server(port=0)

    async def later(order: AttrsOrder) -> AttrsOrder:
        return AttrsOrder(order.sku, order.qty + 1)

    def returns_awaitable(order: PydanticOrder) -> Any:
        async def inner() -> PydanticOrder:
            return PydanticOrder(sku=order.sku, qty=order.qty + 2)

        return inner()

    server.post("/later", later)
    server.post("/awaitable", returns_awaitable)
    async with server:
        assert (await call(factory, server, "/later", {"sku": "a", "qty": 1})).payload == {
            "sku": "a",
            "qty": 2,
        }
        assert (await call(factory, server, "/awaitable", {"sku": "a", "qty": 1})).payload == {
            "sku": "a",
            "qty": 3,
        }


def test_a_type_no_converter_handles_is_a_type_error_at_registration(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0)

    def takes_plain(order: Plain) -> None: ...

    def takes_unknown(msg: distro.Message, order: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    with pytest.raises(TypeError, match=r"Plain.*no converter"):
        server.post("/plain", takes_plain)
    with pytest.raises(TypeError, match="NotDefinedAnywhere"):
        server.post("/unknown", takes_unknown)
    assert server.routes == ()


def test_without_cattrs_an_attrs_payload_names_the_extra(
    factory: distro.Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cattrs", None)
    monkeypatch.setitem(sys.modules, "cattrs.preconf.json", None)
    _typed._cattrs_converter.cache_clear()
    try:
        server = factory.server(port=0)

        def take(order: AttrsOrder) -> None: ...

        with pytest.raises(TypeError, match=r"distro-core\[cattrs\]"):
            server.post("/order", take)
        server.post("/p", lambda order: None)  # untyped handlers need nothing
    finally:
        _typed._cattrs_converter.cache_clear()


async def test_other_annotations_go_through_cattrs(factory: distro.Factory) -> None:
    server = factory.server(port=0)

    def total(lines: list[Line]) -> int:
        return sum(line.qty for line in lines)

    def count(n: int) -> int:
        return n + 1

    server.post("/total", total)
    server.post("/count", count)
    async with server:
        assert (await call(factory, server, "/total", [{"sku": "a", "qty": 4}])).payload == 4
        assert (await call(factory, server, "/count", 41)).payload == 42
        error = await refused(factory, server, "/count", "forty")
    assert error.code == "invalid_payload"


def test_a_handler_can_raise_invalid_payload_itself() -> None:
    exc = distro.InvalidPayload("Order", [("qty", "must be positive"), ("", "too big")])
    assert str(exc) == "the payload is not a valid Order: qty: must be positive; payload: too big"
    assert isinstance(exc, ValueError) and isinstance(exc, distro.DistroError)
