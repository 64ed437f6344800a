"""distro.Reply: a handler's reply with headers of its own (docs/wire-format.md, "Reply
headers")."""

from __future__ import annotations

import asyncio

import pytest

import distro_core as distro
from distro_core import _protocol
from distro_core._reply import RESERVED


@pytest.fixture(params=["memory", "udp4", "tcp"])
def factory(request: pytest.FixtureRequest) -> distro.Factory:
    return distro.create(request.param)


async def test_the_reply_message_carries_the_handlers_headers(factory: distro.Factory) -> None:
    server = factory.server(port=0)

    @server.get("/report/{id}")
    def report(msg: distro.Message) -> distro.Reply:
        return distro.Reply({"rows": 3}, headers={"cache": "60s", "version": 2, "tags": ["a"]})

    @server.get("/async")
    async def later(msg: distro.Message) -> distro.Reply:
        await asyncio.sleep(0)
        return distro.Reply(None, headers={"empty": True})

    async with server, factory.client(port=server.address[1]) as client:
        msg = distro.message({"uri": "/report/7"})
        reply = await client.request(msg, timeout=5)
        empty = await client.request(distro.message({"uri": "/async"}), timeout=5)
    assert reply.payload == {"rows": 3}
    assert reply.headers == {
        "uri": "REPLY",
        "inReplyTo": msg.id,
        "cache": "60s",
        "version": 2,
        "tags": ["a"],
    }
    assert empty.payload is None and empty.headers["empty"] is True  # Reply(None) answers


async def test_a_reply_without_headers_is_an_ordinary_reply() -> None:
    factory = distro.create("memory")
    server = factory.server(port=0)
    server.get("/x", lambda m: distro.Reply([1, 2]))
    async with server, factory.client(port=server.address[1]) as client:
        msg = distro.message({"uri": "/x"})
        reply = await client.request(msg, timeout=5)
    assert (reply.headers, reply.payload) == ({"uri": "REPLY", "inReplyTo": msg.id}, [1, 2])


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_the_protocols_headers_cannot_be_set(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        distro.Reply(1, headers={name: "x", "fine": 1})


def test_bad_headers_are_refused_when_the_reply_is_made() -> None:
    with pytest.raises(TypeError):
        distro.Reply(1, headers=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        distro.Reply(1, headers={1: "a"})  # type: ignore[dict-item]
    given = {"a": 1}
    reply = distro.Reply(1, headers=given)
    given["b"] = 2
    assert reply.headers == {"a": 1}  # a copy
    assert reply == distro.Reply(1, {"a": 1}) and reply != distro.Reply(2, {"a": 1})
    assert repr(reply) == "Reply(1, headers={'a': 1})"


async def test_a_reply_that_is_not_json_is_not_serializable() -> None:
    factory = distro.create("memory")
    server = factory.server(port=0)
    server.get("/header", lambda m: distro.Reply(1, headers={"when": {1, 2}}))
    server.get("/payload", lambda m: distro.Reply(float("nan"), headers={"a": 1}))
    async with server, factory.client(port=server.address[1]) as client:
        for uri in ("/header", "/payload"):
            with pytest.raises(distro.RemoteError) as info:
                await client.request(distro.message({"uri": uri}), timeout=5)
            assert info.value.code == "not_serializable", uri
            assert "cannot be sent" in info.value.remote, uri


def test_reply_headers_are_written_after_uri_and_in_reply_to() -> None:
    request = distro.message({"uri": "/x", "replyTo": "r"}, id="req")
    data = _protocol.reply(request, distro.Reply({"a": 1}, headers={"etag": "v1"}))
    headers = b'"headers":{"uri":"REPLY","inReplyTo":"req","etag":"v1"}'
    assert data.endswith(headers + b',"payload":{"a":1}}')


async def test_a_reply_too_large_for_the_transport_is_an_error_reply() -> None:
    factory = distro.create("udp4")
    server = factory.server(port=0)
    server.get("/big", lambda m: distro.Reply("x", headers={"pad": "p" * 70_000}))
    async with server, factory.client(port=server.address[1]) as client:
        with pytest.raises(distro.RemoteError) as info:
            await client.request(distro.message({"uri": "/big"}, "." * 400), timeout=5)
    assert info.value.code == "too_large"
