"""Interop with the JavaScript original over Redis pub/sub (issue 14, point 5).

The original's client (distro-redis ``sendMsg``) publishes every message twice: on
``URI.toUpperCase() + "." + verb`` and on ``RECEIVE``, the channel its servers' ``receive()``
handlers (``psubscribe("RECEIVE")``) listen on. Its message is ``JSON.stringify({id, headers,
payload})`` with a v4 id made from ``Math.random``. These tests replay those exact bytes (the
vectors below were printed by node running the original's ``messages.js``; one test makes fresh
ones with node when it is installed) and check both directions: a distro server handles such a
message once, and a distro client with ``publish_receive=True`` reaches ``receive()`` handlers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from typing import Any

import pytest
import redis.asyncio as aredis

import distro_core as distro
from distro_core.testing import Recorder, wait_until

# node -e '<the original messages.js getUUID and Message.toString>; console.log(...)'
JS_MESSAGES = [
    b'{"id":"a813f66e-4855-44be-8256-53c75542a988","headers":{"uri":"/customer/7/orders",'
    b'"verb":"POST"},"payload":{"amount":12,"note":"caf\xc3\xa9 \xe2\x98\x83"}}',
    # payload undefined: JSON.stringify leaves the key out.
    b'{"id":"b595e4a8-e330-4dfe-9d72-2ce108ca3160","headers":{"uri":"/customer/7"}}',
    b'{"id":"b044d754-dcce-499a-8067-af8eff071a38","headers":{"uri":"/Stock/x1","verb":"PUT",'
    b'"address":"127.0.0.1","port":8080},"payload":[1,2.5,null,true]}',
]

# The original's message code (distro src/messages.js), run by node to make fresh vectors.
NODE_SCRIPT = r"""
function getUUID() {
  return 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, function(c){
      var r = Math.random()*16|0, v = c == 'x' ? r : (r&0x3|0x8);
      return v.toString(16);
  });
}
function toString(headers, payload) {
  return JSON.stringify({id: getUUID(), headers: headers, payload: payload});
}
var note = "\u00e9\ud83d\ude00";
console.log(toString({uri: "/customer/7/orders", verb: "POST"}, {amount: 12, note: note}));
console.log(toString({uri: "/customer/7"}, undefined));
console.log(toString({uri: "/Stock/x1", verb: "PUT"}, [1, 2.5, null, true]));
"""


def js_channel(prefix: str, raw: bytes) -> bytes:
    """The channel the original publishes ``raw`` on: ``uri.toUpperCase() + "." + verb``."""
    headers = json.loads(raw)["headers"]
    return f"{prefix}{headers['uri'].upper()}.{headers.get('verb') or 'GET'}".encode()


def shop(options: dict[str, Any]) -> tuple[distro.Server, dict[str, Recorder]]:
    """A server with routes for the vectors and a catch-all (which alone would subscribe to
    every verb's pattern)."""
    server = distro.create("redis").server(options)
    seen = {"all": Recorder(), "orders": Recorder(), "customer": Recorder(), "stock": Recorder()}
    server.receive(seen["all"])
    server.post("/customer/{id}/orders", seen["orders"])
    server.get("/customer/{id}", seen["customer"])
    server.put("/stock/{sku}", seen["stock"])
    return server, seen


async def replay_as_the_original(raw: aredis.Redis, prefix: str, messages: list[bytes]) -> None:
    """Publish each message as the original's client does: its channel, then RECEIVE (bare,
    as the original names it, and under the test's prefix)."""
    for data in messages:
        await raw.publish(js_channel(prefix, data), data)
        await raw.publish("RECEIVE", data)
        await raw.publish(f"{prefix}RECEIVE", data)


async def test_a_message_the_original_publishes_twice_is_handled_once(
    options: dict[str, Any], prefix: str, redis_url: str
) -> None:
    async with aredis.Redis.from_url(redis_url) as raw:
        server, seen = shop(options)
        catch_all_only = distro.create("redis").server(options)
        monitor = Recorder()
        catch_all_only.receive(monitor)
        async with server, catch_all_only:
            await replay_as_the_original(raw, prefix, JS_MESSAGES)
            # A last message, published after the others were answered: once it arrived, so had
            # everything before it (one Redis, one subscriber link each).
            end = distro.message({"uri": "/end", "verb": "DELETE"})
            await raw.publish(f"{prefix}/END.DELETE", end.to_bytes())
            await seen["all"].wait_for(4)
            await monitor.wait_for(4)
        assert [m.id for m in seen["all"].messages] == [
            json.loads(d)["id"] for d in JS_MESSAGES
        ] + [end.id]
        assert [m.id for m in monitor.messages] == [m.id for m in seen["all"].messages]
        [order] = seen["orders"].messages
        assert order.params == {"id": "7"}
        assert order.payload == {"amount": 12, "note": "caf\u00e9 \u2603"}
        [customer] = seen["customer"].messages
        assert customer.payload is None  # no payload key at all, as JSON.stringify wrote it
        assert customer.verb is None  # routed as GET
        [stock] = seen["stock"].messages
        assert stock.params == {"sku": "x1"} and stock.payload == [1, 2.5, None, True]
        assert server.stats.received == 4  # not 7: it does not subscribe to RECEIVE


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_fresh_bytes_from_node_are_handled_once(
    options: dict[str, Any], prefix: str, redis_url: str
) -> None:
    async with aredis.Redis.from_url(redis_url) as raw:
        made = (
            await asyncio.to_thread(
                subprocess.run,
                ["node", "-e", NODE_SCRIPT],
                capture_output=True,
                timeout=30,
                check=True,
            )
        ).stdout
        messages = made.splitlines()
        assert len(messages) == 3
        for data in messages:
            assert json.loads(data)["id"][14] == "4"  # a v4 id, as the original makes them
        server, seen = shop(options)
        async with server:
            await replay_as_the_original(raw, prefix, messages)
            await raw.publish(f"{prefix}/END.GET", distro.message({"uri": "/end"}).to_bytes())
            await seen["all"].wait_for(4)
        assert [m.id for m in seen["all"].messages][:3] == [json.loads(d)["id"] for d in messages]
        assert seen["orders"].payloads == [{"amount": 12, "note": "\u00e9\U0001f600"}]
        assert len(seen["customer"].messages) == 1 and len(seen["stock"].messages) == 1


async def receive_handler(raw: aredis.Redis, channel: str) -> tuple[Any, list[bytes]]:
    """A JavaScript server's ``receive()``: ``psubscribe("RECEIVE")`` (confirmed)."""
    pubsub = raw.pubsub()
    await pubsub.psubscribe(channel)
    got: list[bytes] = []
    confirmed = await pubsub.get_message(timeout=5)
    assert confirmed is not None and confirmed["type"] == "psubscribe"

    async def read() -> None:
        while True:
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if item is not None and item["type"] == "pmessage":
                got.append(item["data"])

    return (pubsub, asyncio.get_running_loop().create_task(read())), got


async def stop(handle: tuple[Any, Any]) -> None:
    pubsub, task = handle
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pubsub.aclose()


async def test_publish_receive_reaches_the_originals_receive_handlers(
    options: dict[str, Any], prefix: str, redis_url: str
) -> None:
    async with aredis.Redis.from_url(redis_url) as raw:
        handle, got = await receive_handler(raw, f"{prefix}RECEIVE")
        factory = distro.create("redis")
        server, seen = shop(options)
        try:
            async with server, factory.client(options, publish_receive=True) as client:
                order = distro.message({"uri": "/customer/7/orders", "verb": "POST"}, {"amount": 3})
                await client.send(order)
                request = distro.message({"uri": "/customer/9"})
                seen["customer"].result = {"total": 1}
                reply = await client.request(request, timeout=5)
                assert reply.payload == {"total": 1}
                await wait_until(lambda: len(got) == 2, 5, "RECEIVE to get both messages")
                await seen["all"].wait_for(2)
        finally:
            await stop(handle)
        # What the original's receive() gets: exactly the message's bytes, which it can parse.
        assert got[0] == order.to_bytes()
        first = json.loads(got[0])
        assert set(first) == {"id", "headers", "payload"} and first["id"] == order.id
        assert json.loads(got[1])["id"] == request.id  # the request too (it cannot answer it)
        # The distro server took each once (it does not subscribe to RECEIVE).
        assert [m.id for m in seen["all"].messages] == [order.id, request.id]
        assert seen["orders"].payloads == [{"amount": 3}]


async def test_without_the_option_receive_hears_nothing(
    options: dict[str, Any], prefix: str, redis_url: str
) -> None:
    async with aredis.Redis.from_url(redis_url) as raw:
        handle, got = await receive_handler(raw, f"{prefix}RECEIVE")
        server, seen = shop(options)
        try:
            async with server, distro.create("redis").client(options) as client:
                await client.send(distro.message({"uri": "/customer/1/orders", "verb": "POST"}, 1))
                await seen["orders"].wait_for(1)
                # RECEIVE would have had it by now: Redis answered the PUBLISH, in order.
                await raw.publish(f"{prefix}RECEIVE", b"marker")
                await wait_until(lambda: got != [], 5, "the marker")
        finally:
            await stop(handle)
        assert got == [b"marker"]


async def test_a_message_only_receive_hears_is_not_unheard(
    options: dict[str, Any], prefix: str, redis_url: str
) -> None:
    async with aredis.Redis.from_url(redis_url) as raw:
        handle, got = await receive_handler(raw, f"{prefix}RECEIVE")
        try:
            async with distro.create("redis").client(options, publish_receive=True) as client:
                await client.send(distro.message({"uri": "/only/js", "verb": "POST"}))
                await wait_until(lambda: len(got) == 1, 5, "RECEIVE")
                await stop(handle)
                handle = None  # type: ignore[assignment]
                # Now nobody listens anywhere: this one is unheard, once (not once per channel).
                await client.send(distro.message({"uri": "/nobody", "verb": "POST"}))
                await wait_until(lambda: client.stats.unheard >= 1, 5, "the unheard count")
                await client.send(distro.message({"uri": "/nobody/2", "verb": "POST"}))
                await wait_until(lambda: client.stats.unheard >= 2, 5, "the unheard count")
                assert client.stats.unheard == 2
        finally:
            if handle is not None:
                await stop(handle)


async def test_a_request_only_receive_hears_fails_at_once(
    options: dict[str, Any], prefix: str, redis_url: str
) -> None:
    async with aredis.Redis.from_url(redis_url) as raw:
        handle, got = await receive_handler(raw, f"{prefix}RECEIVE")
        try:
            async with distro.create("redis").client(options, publish_receive=True) as client:
                with pytest.raises(distro.RemoteError) as failed:
                    await client.request(distro.message({"uri": "/no/route"}), timeout=5)
                assert failed.value.code == "no_handler"
                await wait_until(lambda: len(got) == 1, 5, "RECEIVE")
        finally:
            await stop(handle)


async def test_the_option_is_checked_and_servers_accept_it(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    with pytest.raises(ValueError, match="publish_receive"):
        factory.client(options, publish_receive="yes")
    server = factory.server(options, publish_receive=True)  # shared options: servers ignore it
    recorder = Recorder()
    server.post("/x", recorder)
    async with server, factory.client(options, publish_receive=True) as client:
        await client.send(distro.message({"uri": "/x", "verb": "POST"}), confirm=True)
    assert len(recorder.messages) == 1
