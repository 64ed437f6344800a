"""The redis transport against a real Redis: channel naming, fan-out, exactly-once delivery,
pattern subscriptions, request/reply edges, RECEIVED addressing, options and wrapped errors."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from _redis_servers import RedisProcess, free_port

import distro_core as distro
from distro_core.testing import Recorder, wait_until


def raw(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


async def publish(url: str, channel: str, data: str) -> int:
    """PUBLISH with a plain redis-py client, as redis-cli would."""
    client = aredis.Redis.from_url(url)
    try:
        return int(await client.publish(channel, data))
    finally:
        await client.aclose()


async def marker(client: distro.Client, got: Recorder, count: int) -> None:
    """Send a last message and wait for it: a server reads one Redis link in order, so any
    duplicate of an earlier message would have arrived before it."""
    await client.send(distro.message({"uri": "/marker", "verb": "POST"}))
    await got.wait_for(count)


# -- channel naming ----------------------------------------------------------------------------


async def test_a_raw_publish_on_the_named_channel_reaches_the_handler(
    options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/customer/{id}", got)
    async with server:
        msg_id = str(uuid.uuid4())
        frame = raw({"id": msg_id, "headers": {"uri": "/customer/7", "verb": "POST"}, "payload": 1})
        receivers = await publish(redis_url, f"{prefix}/CUSTOMER/7.POST", frame)
        [msg] = await got.wait_for(1)
    assert receivers == 1
    assert msg.id == msg_id
    assert msg.params == {"id": "7"}
    assert msg.payload == 1


async def test_a_client_publishes_on_uri_and_verb_and_get_without_verb(
    options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    listener = aredis.Redis.from_url(redis_url).pubsub()
    await listener.psubscribe(f"{prefix}*")
    try:
        async with distro.create("redis").client(options) as client:
            await client.send(distro.message({"uri": "/Orders/5", "verb": "PATCH"}, "p"))
            await client.send(distro.message({"uri": "/orders/6"}, "g"))
            seen = []
            deadline = time.monotonic() + 5
            while len(seen) < 2 and time.monotonic() < deadline:
                item = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
                if item is not None:
                    seen.append((item["channel"], json.loads(item["data"])["payload"]))
    finally:
        await listener.aclose()
    assert seen == [
        (f"{prefix}/ORDERS/5.PATCH".encode(), "p"),
        (f"{prefix}/ORDERS/6.GET".encode(), "g"),
    ]


async def test_a_message_reaches_every_route_the_core_matches_it_to(
    options: dict[str, Any],
) -> None:
    """Routing ignores case by lower-casing; channel names follow it, even for the few
    characters that upper-casing alone would keep apart (the Kelvin sign is a "k" to the
    router, and "\u0130" lower-cases to two characters)."""
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/k/{n}", got)
    server.post("/\u0130", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/\u212a/1", "verb": "POST"}))
        await client.send(distro.message({"uri": "/\u0130", "verb": "POST"}))
        await got.wait_for(2)
    assert [m.uri for m in got.messages] == ["/\u212a/1", "/\u0130"]


# -- fan-out and exactly once ------------------------------------------------------------------


async def test_every_matching_server_receives_a_message_and_others_do_not(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    first, second, other = (factory.server(options) for _ in range(3))
    got_first, got_second, got_other = Recorder(), Recorder(), Recorder()
    first.post("/stock/{sku}", got_first)
    second.post("/stock/{item}", got_second)
    other.post("/elsewhere", got_other)
    async with first, second, other, factory.client(options) as client:
        await client.send(distro.message({"uri": "/stock/a1", "verb": "POST"}, 5))
        await got_first.wait_for(1)
        await got_second.wait_for(1)
        await client.send(distro.message({"uri": "/elsewhere", "verb": "POST"}))
        await got_other.wait_for(1)
    assert got_first.payloads == got_second.payloads == [5]
    assert got_second.messages[0].params == {"item": "a1"}
    assert other.stats.received == 1  # only its own route's message reached it


async def test_a_catch_all_and_a_matching_route_get_one_delivery(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    everything, routed = Recorder(), Recorder()
    server.receive(everything)
    server.put("/a/{x}", routed)
    server.put("/a/b", routed)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/a/b", "verb": "PUT"}))
        await client.send(distro.message({"uri": "/unrouted", "verb": "DELETE"}))
        await marker(client, everything, 3)
    assert [m.uri for m in everything.messages] == ["/a/b", "/unrouted", "/marker"]
    assert len(routed.messages) == 1
    assert server.stats.received == 3


async def test_overlapping_route_patterns_deliver_once(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.get("/a/{x}", got)
    server.get("/{y}/b", got)
    server.get("/a/b", got)
    server.post("/marker", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/A/B"}))
        await client.send(distro.message({"uri": "/a/zz"}))
        await marker(client, got, 3)
    assert [m.uri for m in got.messages] == ["/A/B", "/a/zz", "/marker"]
    assert server.stats.received == 3


async def test_a_catch_all_added_while_serving_neither_loses_nor_doubles(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    routed, everything = Recorder(), Recorder()
    server.post("/a", routed)
    server.post("/marker", routed)
    async with server, factory.client(options) as client:
        server.receive(everything)  # resubscribes: catch-all patterns in, the route's channel out
        for i in range(50):
            await client.send(distro.message({"uri": "/a", "verb": "POST"}, i))
        await marker(client, routed, 51)
    assert routed.payloads[:50] == list(range(50))
    assert len(everything.messages) == 51
    assert server.stats.received == 51


async def test_route_params_become_patterns_with_glob_characters_escaped(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.get("/x*y/{id}", got)
    server.post("/marker", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/xzzy/1"}))  # '*' is literal: no match
        await client.send(distro.message({"uri": "/x*y/2"}))
        await client.send(distro.message({"uri": "/X*Y/3"}))
        await marker(client, got, 3)
    assert [m.params.get("id") for m in got.messages] == ["2", "3", None]
    assert server.stats.received == 3


async def test_routes_registered_after_start_are_subscribed(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    async with server, factory.client(options) as client:
        server.post("/late/{n}", got)

        async def until_heard() -> None:
            while not got.messages:
                await client.send(distro.message({"uri": "/late/1", "verb": "POST"}))
                await asyncio.sleep(0.01)  # resend until Redis has the new subscription

        await asyncio.wait_for(until_heard(), 5)
    assert got.messages[0].params == {"n": "1"}


async def test_a_closing_server_counts_the_frames_it_held_while_paused(
    options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    """With one handler at a time, frames read behind a busy handler are held; those still
    held when the server closes are counted ("closing"), never dropped silently. (Those not
    read yet go with the link: Redis pub/sub is at-most-once.)"""
    factory = distro.create("redis")
    server = factory.server(options, max_concurrency=1, close_timeout=0.5)
    release = asyncio.Event()

    @server.post("/job")
    async def job(msg: distro.Message) -> None:
        await release.wait()

    await server.start()
    try:
        frames = [
            raw({"id": str(uuid.uuid4()), "headers": {"uri": "/job", "verb": "POST"}, "payload": i})
            for i in range(200)
        ]
        publisher = aredis.Redis.from_url(redis_url)
        try:
            # One pipeline: the server reads many of them in one go, behind the first.
            async with publisher.pipeline(transaction=False) as pipe:
                for data in frames:
                    pipe.publish(f"{prefix}/JOB.POST", data)
                await pipe.execute()
        finally:
            await publisher.aclose()
        await wait_until(lambda: server.stats.received >= 1, what="the first job")
        closing = asyncio.ensure_future(server.aclose())
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(closing, 5)
    finally:
        await server.aclose()
    stats = server.stats
    assert stats.handled == 1, stats
    assert 0 < stats.dropped.get("closing", 0) < 200, stats
    assert stats.dropped_total == stats.dropped["closing"], stats


# -- request/reply -----------------------------------------------------------------------------


async def test_a_request_no_server_subscribes_to_fails_at_once(options: dict[str, Any]) -> None:
    async with distro.create("redis").client(options) as client:
        started = time.monotonic()
        with pytest.raises(distro.RemoteError, match="no handler for GET /nobody"):
            await client.request(distro.message({"uri": "/nobody"}), timeout=5)
    assert time.monotonic() - started < 2


async def test_a_publish_redis_refuses_fails_its_request_or_the_next_send(
    own_redis: RedisProcess,
) -> None:
    """A user whose ACL lets it take its replies but publish nowhere else: a request fails at
    once as refused; a refused one-way send is reported by a later send."""
    admin = redis.Redis.from_url(own_redis.url)
    try:
        admin.execute_command(
            "ACL", "SETUSER", "mute", "on", ">pw", "~*", "resetchannels",
            "&acl:distro.reply.*", "+@all",
        )  # fmt: skip
    finally:
        admin.close()
    url = own_redis.url.replace("redis://", "redis://mute:pw@")
    async with distro.create("redis").client(url=url, prefix="acl:") as client:
        started = time.monotonic()
        with pytest.raises(distro.RemoteError, match=r"the request was refused: .*NOPERM"):
            await client.request(distro.message({"uri": "/x"}), timeout=5)
        assert time.monotonic() - started < 2
        with pytest.raises(distro.TransportError, match=r"refused an earlier PUBLISH.*NOPERM"):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until Redis's answer to a send is back
                await client.send(distro.message({"uri": "/x", "verb": "POST"}))
                await asyncio.sleep(0.01)


async def test_a_server_replies_only_on_reply_channels(
    options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    server.get("/q", lambda m: "answer")
    async with server:
        request = {"id": str(uuid.uuid4()), "headers": {"uri": "/q", "replyTo": "/Q.GET"}}
        await publish(redis_url, f"{prefix}/Q.GET", raw(request))
        await wait_until(lambda: server.stats.dropped.get("reply_failed") == 1, what="refusal")
    assert server.stats.replies_sent == 0
    assert server.stats.received == 1  # the reply was not published back onto /Q.GET


async def test_two_servers_answer_one_request_and_the_first_reply_wins(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    first, second = factory.server(options), factory.server(options)
    first.get("/who", lambda m: "first")
    second.get("/who", lambda m: "second")
    async with first, second, factory.client(options) as client:
        reply = await client.request(distro.message({"uri": "/who"}), timeout=5)
        await wait_until(lambda: first.stats.replies_sent + second.stats.replies_sent == 2)
    assert reply.payload in ("first", "second")


async def test_a_catch_all_server_does_not_answer_requests_another_server_handles(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    monitor, service = factory.server(options), factory.server(options)
    seen = Recorder()
    monitor.receive(seen)  # sees every request, has no route for any
    service.get("/price/{sku}", lambda m: 10)
    async with monitor, service, factory.client(options) as client:
        replies = [
            await client.request(distro.message({"uri": f"/price/{n}"}), timeout=5)
            for n in range(20)
        ]
        await seen.wait_for(20)
    assert [r.payload for r in replies] == [10] * 20
    assert monitor.stats.replies_sent == 0


# -- RECEIVED addressing -----------------------------------------------------------------------


async def test_a_server_address_is_the_bus_and_a_claimed_number(
    options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    factory = distro.create("redis")
    port = 20000 + uuid.uuid4().int % 40000
    first = factory.server(options, port=port)
    clash = factory.server(options, port=port)
    async with first:
        assert first.address == (f"{redis_url}#{prefix}", port)
        with pytest.raises(distro.AddressInUse, match=str(port)):
            await clash.start()
        others = [factory.server(options) for _ in range(5)]
        for server in others:
            await server.start()
        try:
            ports = {s.address[1] for s in others} | {port}
            assert len(ports) == 6
        finally:
            for server in others:
                await server.aclose()


async def test_received_to_another_bus_is_not_sent(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    server = factory.server(options, ack_any_address=True)
    handled = Recorder()
    server.post("/order", handled)
    async with server, factory.client(options) as client:
        headers = {"uri": "/order", "verb": "POST", "address": "redis://10.9.9.9:6379/0", "port": 5}
        await client.send(distro.message(headers))
        await handled.wait_for(1)
        await wait_until(lambda: server.stats.dropped.get("ack_failed") == 1, what="ack_failed")
    assert server.stats.acks_sent == 0


# -- options and errors ------------------------------------------------------------------------


def test_options_are_checked_when_the_server_or_client_is_made() -> None:
    factory = distro.create("redis")
    with pytest.raises(TypeError, match="unknown option"):
        factory.server(host="x")
    with pytest.raises(ValueError, match="scheme"):
        factory.client(url="http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="not both"):
        factory.client(url="redis://127.0.0.1", address="127.0.0.1")
    with pytest.raises(ValueError, match="neither a host name nor a Redis URL"):
        factory.client(address="127.0.0.1:6380")
    with pytest.raises(ValueError, match="port"):
        factory.server(port=70000)
    with pytest.raises(ValueError, match="differs"):
        factory.server(address="redis://127.0.0.1:6379/0#a:", prefix="b:")
    with pytest.raises(ValueError, match="connect_timeout"):
        factory.client(connect_timeout=0)
    with pytest.raises(ValueError, match="prefix"):
        factory.client(prefix=3)
    with pytest.raises(TypeError, match="foo"):
        factory.client(url="redis://127.0.0.1/0?foo=1")


def test_the_bus_names_redis_and_prefix_without_credentials() -> None:
    factory = distro.create("redis")
    cases = {
        "": "redis://127.0.0.1:6379/0",
        "redis.example": "redis://redis.example:6379/0",
        "::1": "redis://[::1]:6379/0",
        "redis://10.1.2.3:6380/2#shop:": "redis://10.1.2.3:6380/2#shop:",
        "rediss://h:6380/1?ssl_cert_reqs=none": "rediss://h:6380/1",
        "unix:///run/redis.sock?db=3#p:": "unix:///run/redis.sock?db=3#p:",
    }
    for address, bus in cases.items():
        client = factory.client(address=address) if address else factory.client()
        assert client.transport.describe() == f"redis({bus})"
    secret = factory.client(url="redis://user:s3cret@127.0.0.1:6379/0", prefix="p:")
    assert secret.transport.describe() == "redis(redis://127.0.0.1:6379/0#p:)"
    with pytest.raises(ValueError) as info:
        factory.client(url="redis://user:s3cret@127.0.0.1:6379/0?db=x")
    assert "s3cret" not in str(info.value)


async def test_a_client_made_from_a_server_address_reaches_it(options: dict[str, Any]) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    server.get("/hello", lambda m: "hi")
    async with server:
        host, port = server.address
        async with factory.client(address=host, port=port) as client:
            reply = await client.request(distro.message({"uri": "/hello"}), timeout=5)
    assert reply.payload == "hi"


async def test_an_unreachable_redis_is_a_quick_connection_error() -> None:
    factory = distro.create("redis")
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(distro.ConnectionError, match="cannot open") as info:
        async with factory.client(url=url):
            pass
    assert isinstance(info.value.__cause__, redis.RedisError | OSError)
    with pytest.raises(distro.ConnectionError):
        await factory.server(url=url).start()
    assert time.monotonic() - started < 2


async def test_wrong_credentials_are_a_connection_error(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://nobody:wrong@")
    with pytest.raises(distro.ConnectionError) as info:
        async with distro.create("redis").client(url=url):
            pass
    assert isinstance(info.value.__cause__, redis.RedisError)


async def test_a_server_start_on_an_unreachable_redis_leaves_it_closed() -> None:
    server = distro.create("redis").server(url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(distro.ConnectionError):
        await server.start()
    assert not server.is_serving
    with pytest.raises(distro.StateError):
        await server.start()


# -- hostile input -----------------------------------------------------------------------------


async def test_garbage_published_on_a_channel_is_dropped_and_the_server_goes_on(
    options: dict[str, Any], redis_url: str, prefix: str
) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/in", got)
    junk = [
        b"\xff\xfe\x00",
        b"{",
        b"[]",
        b'{"id":"x"}',
        b"\r\n*3\r\n$7\r\nmessage\r\n",
        b"x" * 100_000,
    ]
    async with server, factory.client(options) as client:
        raw_client = aredis.Redis.from_url(redis_url)
        try:
            for data in junk:
                await raw_client.publish(f"{prefix}/IN.POST", data)
        finally:
            await raw_client.aclose()
        await client.send(distro.message({"uri": "/in", "verb": "POST"}, "fine"))
        await got.wait_for(1)
    assert got.payloads == ["fine"]
    assert server.stats.dropped.get("invalid") == len(junk)


async def test_a_redis_that_answers_garbage_is_a_connection_error_not_a_crash() -> None:
    """A fake "Redis" that takes redis-py's handshake, then answers SUBSCRIBE with junk."""
    from distro_redis._resp import Decoder

    async def fake_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = Decoder()
        while data := await reader.read(65536):
            for command in decoder.feed(data):
                name = command[0].upper() if isinstance(command, list) and command else b""
                writer.write(b"?not resp\r\n" if name == b"SUBSCRIBE" else b"+OK\r\n")
        writer.close()

    fake = await asyncio.start_server(fake_redis, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    try:
        server = distro.create("redis").server(url=f"redis://127.0.0.1:{port}/0", connect_timeout=2)
        with pytest.raises(distro.ConnectionError):
            await server.start()
        assert not server.is_serving
    finally:
        fake.close()
        await fake.wait_closed()


# -- sends nobody received (issue 10, part 4) --------------------------------------------------


class _Replies:
    """A stand-in for the client: what comes back on a connection."""

    def __init__(self) -> None:
        self.unheard_details: list[str] = []

    def frame_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def request_failed(self, request_id: str, failure: Any, detail: str) -> None:
        pass

    def unheard(self, detail: str) -> None:
        self.unheard_details.append(detail)


async def test_a_send_no_server_received_is_counted_and_reported_with_its_channel(
    options: dict[str, Any],
) -> None:
    factory = distro.create("redis")
    server = factory.server(options)
    got = Recorder()
    server.post("/heard", got)
    async with server:
        replies = _Replies()
        connection = await factory.transport.from_options(options).connect(replies)
        try:
            for uri in ("/heard", "/nobody", "/nobody", "/heard", "/nobody/else"):
                msg = distro.message({"uri": uri, "verb": "POST"})
                await connection.send(msg.to_bytes(), msg)
            await got.wait_for(2)
            await wait_until(lambda: connection.unheard == 3, what="3 unheard")  # type: ignore[attr-defined]
        finally:
            await connection.aclose()
    details = replies.unheard_details
    assert len(details) == 3, details
    prefix = options["prefix"]
    assert sum(f"channel {prefix}/NOBODY.POST " in d for d in details) == 2, details
    assert sum(f"channel {prefix}/NOBODY/ELSE.POST " in d for d in details) == 1, details
