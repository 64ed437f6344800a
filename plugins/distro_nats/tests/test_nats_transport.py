"""The nats transport on a real NATS: subjects a user can publish on by hand, fan-out and
queue groups, requests nobody hears, bad input, limits and options."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import nats
import pytest
from _nats_servers import free_port
from distro_nats import NatsTransport, message_subject

import distro_core as distro
from distro_core.testing import Recorder, wait_until


async def test_a_message_published_by_hand_on_the_documented_subject_reaches_the_handler(
    options: dict[str, Any], nats_url: str, prefix: str
) -> None:
    server = distro.create("nats").server(options)
    got = Recorder()
    server.post("/customer/{id}", got)
    async with server:
        nc = await nats.connect(nats_url)
        try:
            sent = distro.message({"uri": "/customer/7", "verb": "POST"}, {"total": 12})
            # The README's example: <prefix>.<VERB>.<uri tokens>.
            await nc.publish(f"{prefix}.POST.customer.7", sent.to_bytes())
            await nc.flush()
            [msg] = await got.wait_for(1)
        finally:
            await nc.close()
    assert msg == sent
    assert msg.params == {"id": "7"}


async def test_a_handler_can_be_reached_by_hand_with_a_plain_nats_request(
    options: dict[str, Any], nats_url: str, prefix: str
) -> None:
    """A nats-py program speaks distro by putting a replyTo header naming its inbox."""
    server = distro.create("nats").server(options)
    server.get("/echo/{word}", lambda m: m.params["word"].upper())
    async with server:
        nc = await nats.connect(nats_url)
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            request = distro.message({"uri": "/echo/abc", "replyTo": inbox})
            await nc.publish(message_subject(prefix, "/echo/abc", "GET"), request.to_bytes())
            reply = distro.parse((await sub.next_msg(timeout=5)).data)
        finally:
            await nc.close()
    assert reply.payload == "ABC"
    assert reply.headers["inReplyTo"] == request.id


@pytest.mark.parametrize(
    "word", ["a.b", "x y", "*", ">", "Zoë 東京 🚀", "%41", "tab\there", "..", "a>b*c"]
)
async def test_any_segment_reaches_a_parameter_route(options: dict[str, Any], word: str) -> None:
    factory = distro.create("nats")
    server = factory.server(options)
    got = Recorder()
    server.put("/files/{name}/meta", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": f"/FILES/{word}/meta", "verb": "PUT"}, 1))
        reply = await client.request(distro.message({"uri": f"/files/{word}/meta", "verb": "PUT"}))
        [msg, _] = await got.wait_for(2)
    assert msg.params == {"name": word}
    assert reply.payload is None


async def test_overlapping_routes_take_a_message_once(options: dict[str, Any]) -> None:
    factory = distro.create("nats")
    server = factory.server(options)
    specific, general = Recorder(), Recorder()
    server.post("/a/b", specific)
    server.post("/a/{x}", general)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/a/b", "verb": "POST"}, 1))
        await client.send(distro.message({"uri": "/a/c", "verb": "POST"}, 2))
        await specific.wait_for(1)
        await general.wait_for(1)
        await asyncio.sleep(0.2)  # a duplicate would show up by now
    assert specific.payloads == [1]
    assert general.payloads == [2]
    assert server.stats.received == 2


async def test_every_server_gets_each_message_unless_they_form_a_group(
    options: dict[str, Any],
) -> None:
    factory = distro.create("nats")
    seen: list[tuple[str, int]] = []
    servers = []
    for name, group in (("a", None), ("b", None), ("g1", "g"), ("g2", "g")):
        server = factory.server(options, **({"group": group} if group else {}))
        server.post("/event", lambda m, name=name: seen.append((name, m.payload)))
        servers.append(server)
    for server in servers:
        await server.start()
    try:
        async with factory.client(options) as client:
            for n in range(20):
                await client.send(distro.message({"uri": "/event", "verb": "POST"}, n))
            await wait_until(lambda: len(seen) >= 60, what="60 deliveries")
            await asyncio.sleep(0.2)
    finally:
        for server in servers:
            await server.aclose()
    for name in ("a", "b"):
        assert sorted(n for who, n in seen if who == name) == list(range(20))
    grouped = sorted(n for who, n in seen if who.startswith("g"))
    assert grouped == list(range(20)), "the group took each message once"
    assert len(seen) == 60


async def test_a_request_nobody_subscribes_to_fails_at_once(options: dict[str, Any]) -> None:
    async with distro.create("nats").client(options) as client:
        started = time.monotonic()
        with pytest.raises(distro.RemoteError) as info:
            await client.request(distro.message({"uri": "/nobody"}), timeout=10)
        assert time.monotonic() - started < 2
    assert info.value.code == "no_handler"
    assert "subscribes" in str(info.value)


async def test_a_confirmed_send_nobody_subscribes_to_fails_at_once(
    options: dict[str, Any],
) -> None:
    async with distro.create("nats").client(options) as client:
        started = time.monotonic()
        with pytest.raises(distro.RemoteError):
            await client.send(distro.message({"uri": "/nobody", "verb": "POST"}), confirm=True)
        assert time.monotonic() - started < 2


async def test_a_one_way_send_nobody_subscribes_to_is_counted_unheard(
    options: dict[str, Any],
) -> None:
    factory = distro.create("nats")
    server = factory.server(options)
    got = Recorder()
    server.post("/heard", got)
    async with server, factory.client(options) as client:
        await client.send(distro.message({"uri": "/heard", "verb": "POST"}))
        await client.send(distro.message({"uri": "/unheard", "verb": "POST"}))
        await got.wait_for(1)
        await wait_until(lambda: client.stats.unheard == 1, what="one unheard send")
        await asyncio.sleep(0.1)
    assert client.stats.unheard == 1


async def test_bad_input_on_a_subscribed_subject_is_dropped_counted_and_the_server_goes_on(
    options: dict[str, Any], nats_url: str, prefix: str
) -> None:
    factory = distro.create("nats")
    server = factory.server(options)
    got = Recorder()
    server.post("/in", got)
    async with server, factory.client(options) as client:
        nc = await nats.connect(nats_url)
        try:
            for junk in (b"not json", b"{}", b'{"id": 1}', b"\xff\xfe", b""):
                await nc.publish(f"{prefix}.POST.in", junk)
            await nc.flush()
        finally:
            await nc.close()
        await client.send(distro.message({"uri": "/in", "verb": "POST"}, "ok"))
        await got.wait_for(1)
        await wait_until(lambda: server.stats.dropped.get("invalid", 0) >= 5, what="5 invalid")
    assert got.payloads == ["ok"]
    # Every one of them: an empty payload is not a message either.
    assert server.stats.dropped["invalid"] == 5


async def test_a_message_over_the_servers_max_payload_is_refused_before_sending(
    options: dict[str, Any],
) -> None:
    factory = distro.create("nats")
    # Claim a larger limit than the server's (1 MiB by default): the connection still refuses.
    server = factory.server(options)
    got = Recorder()
    server.post("/big", got)
    async with server, factory.client(options, max_message_size=8 * 1024 * 1024) as client:
        with pytest.raises(distro.MessageTooLarge) as info:
            await client.send(distro.message({"uri": "/big", "verb": "POST"}, "x" * 2_000_000))
        assert info.value.limit == 1024 * 1024
        await client.send(distro.message({"uri": "/big", "verb": "POST"}, "fits"))
        await got.wait_for(1)


async def test_two_servers_cannot_claim_one_number(options: dict[str, Any]) -> None:
    factory = distro.create("nats")
    first = factory.server(options)
    async with first:
        port = first.address[1]
        second = factory.server(options, port=port)
        with pytest.raises(distro.AddressInUse, match=str(port)):
            await second.start()
        third = factory.server(options)
        async with third:
            assert third.address[1] != port
            assert (
                third.address[0] == first.address[0] == f"nats://127.0.0.1:4222#{options['prefix']}"
            )


async def test_one_live_url_of_several_is_enough(options: dict[str, Any], nats_url: str) -> None:
    urls = [f"nats://127.0.0.1:{free_port()}", nats_url]
    factory = distro.create("nats")
    server = factory.server(prefix=options["prefix"], url=urls, connect_timeout=1)
    server.get("/ping", lambda m: "pong")
    async with server:
        assert server.address[0].startswith(",".join(urls))
        # A client made from the server's address (a bus naming both URLs) finds it too.
        host, port = server.address
        async with factory.client(address=host, port=port, connect_timeout=1) as client:
            reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
    assert reply.payload == "pong"


async def test_no_reachable_nats_is_a_connection_error_within_the_timeout() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(distro.ConnectionError, match=str(url.rsplit(":", 1)[1])):
        await distro.create("nats").server(url=url, connect_timeout=0.5).start()
    with pytest.raises(distro.ConnectionError):
        async with distro.create("nats").client(url=url, connect_timeout=0.5):
            pass
    assert time.monotonic() - started < 5


def test_options_are_checked() -> None:
    make = NatsTransport.from_options
    assert make({}).config.bus == "nats://127.0.0.1:4222#distro"
    assert make({"address": "nats://h:1,nats://u:p@k:2#shop"}).config.servers == (
        "nats://h:1",
        "nats://u:p@k:2",
    )
    assert make({"url": "nats://u:secret@h:1"}).config.bus == "nats://h:1#distro"
    assert make({"address": "example.org"}).config.servers == ("nats://example.org:4222",)
    assert make({"max_message_size": 10}).capabilities.max_message_size == 10
    assert make({"tls": ssl.create_default_context()}).config.connect_kwargs["tls"]
    with pytest.raises(TypeError, match="colour"):
        make({"colour": "red"})
    with pytest.raises(ValueError, match="not both"):
        make({"url": "nats://h:1", "address": "h"})
    with pytest.raises(ValueError, match="prefix"):
        make({"prefix": "a.*"})
    with pytest.raises(ValueError, match="differs"):
        make({"address": "nats://h:1#a", "prefix": "b"})
    with pytest.raises(ValueError, match="bad url"):
        make({"url": "http://h:1"})
    with pytest.raises(ValueError, match="url"):
        make({"url": 5})
    with pytest.raises(TypeError, match="SSLContext"):
        make({"tls": True})
    with pytest.raises(ValueError, match="connect_timeout"):
        make({"connect_timeout": 0})


def test_servers_option_is_refused_over_pub_sub() -> None:
    with pytest.raises(ValueError, match="servers="):
        distro.create("nats").client(servers=[("127.0.0.1", 1), ("127.0.0.1", 2)])
