"""The jetstream transport on a real JetStream: bad input is dropped, counted and acknowledged
(never delivered again); a hand-published distro message reaches its handler; a send
JetStream refuses is raised (by the next send) and counted; options are checked."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import pytest
from _jetstream_servers import js_options, js_url  # noqa: F401 - fixtures
from distro_nats import message_subject
from distro_nats._jetstream_config import consumer_for, stream_name

import distro_core as distro
from distro_core.testing import Recorder, wait_until


async def test_a_non_distro_payload_is_dropped_counted_and_acknowledged(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    url, prefix = js_options["url"], js_options["prefix"]
    server = distro.create("jetstream").server(
        js_options, group="bad", ack_wait=0.3, redelivery_delay=0.01
    )
    got = Recorder()
    server.post("/job", got)
    async with server:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            subject = message_subject(prefix, "/job", "POST")
            await js.publish(subject, b"\xff not json")
            good = distro.message({"uri": "/job", "verb": "POST"}, 7)
            await js.publish(subject, good.to_bytes())  # by hand, as any NATS program can
            await got.wait_for(1)
            await wait_until(lambda: server.stats.dropped.get("invalid") == 1, what="counted")
            await asyncio.sleep(1.0)  # past ack_wait: a message not acknowledged comes again
            info = await js.consumer_info(stream_name(prefix), consumer_for("bad"))
        finally:
            await nc.close()
    assert got.payloads == [7]
    assert server.stats.dropped == {"invalid": 1}, "delivered again"
    assert server.stats.received == 2
    assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_a_refused_send_is_raised_by_the_next_and_counted(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    url, prefix = js_options["url"], js_options["prefix"]
    async with distro.create("jetstream").client(js_options) as client:
        await client.send(distro.message({"uri": "/job", "verb": "POST"}, 1))
        nc = await nats.connect(url)
        try:
            await nc.jetstream().delete_stream(stream_name(prefix))  # nothing stores them now
        finally:
            await nc.close()
        await client.send(distro.message({"uri": "/job", "verb": "POST"}, 2))
        await wait_until(lambda: client.stats.unheard == 1, what="the refusal counted")
        with pytest.raises(distro.TransportError, match="did not store send #2"):
            await client.send(distro.message({"uri": "/job", "verb": "POST"}, 3))


async def test_sends_wait_for_publish_acknowledgements_within_the_window(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    factory = distro.create("jetstream")
    server = factory.server(js_options, group="w")
    got = Recorder()
    server.post("/job", got)
    async with server, factory.client(js_options, max_unacked=1) as client:
        for n in range(200):
            await client.send(distro.message({"uri": "/job", "verb": "POST"}, n))
        await got.wait_for(200)
    assert got.payloads == list(range(200))


async def test_a_request_waits_for_a_member_that_starts_later(
    js_options: dict[str, Any],  # noqa: F811
) -> None:
    factory = distro.create("jetstream")
    first = factory.server(js_options, group="later")
    first.get("/late", lambda m: "answered")
    async with first:  # registers the route, then stops
        pass
    async with factory.client(js_options) as client:
        asking = asyncio.create_task(client.request(distro.message({"uri": "/late"}), timeout=10))
        await asyncio.sleep(0.3)
        assert not asking.done()
        second = factory.server(js_options, group="later")
        second.get("/late", lambda m: "answered")
        async with second:
            reply = await asyncio.wait_for(asking, 10)
    assert reply.payload == "answered"


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("max_msgs", 0, ValueError),
        ("max_age", -1, ValueError),
        ("storage", "disk", ValueError),
        ("ack_wait", 0, ValueError),
        ("max_deliveries", 0, ValueError),
        ("max_unacked", "64", ValueError),
        ("stream", "a.b", ValueError),
        ("maxlen", 10, TypeError),
    ],
)
def test_options_are_checked(option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=option):
        distro.create("jetstream").server(**{option: value})
