"""A zmq server survives whatever its peers send and however they behave: garbage frames,
wrong frame counts, raw TCP bytes on its port, peers that vanish or never read."""

from __future__ import annotations

import asyncio
import os
import random
import socket

import pytest
import zmq
import zmq.asyncio

import distro_core as distro
from distro_core.testing import Recorder, wait_until

GOOD = distro.message({"uri": "/ok", "verb": "POST"}, "fine")


def _raw_dealer(port: int, **options: int) -> zmq.asyncio.Socket:
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


async def test_garbage_frames_are_dropped_and_counted_and_the_next_message_is_handled() -> None:
    server = distro.create("zmq").server()
    got = Recorder()
    server.post("/ok", got)
    async with server:
        raw = _raw_dealer(server.address[1])
        try:
            garbage = [
                b"\xff\xfe\xfd",  # not UTF-8
                b"not json at all",
                b"[1, 2, 3]",  # JSON, not a message
                b'{"id": "x"}',  # a message without headers
                b"",
                os.urandom(64),
            ]
            for frame in garbage:
                await raw.send(frame)
            await raw.send_multipart([b"two", b"frames"])
            await raw.send_multipart([GOOD.to_bytes(), b"trailing"])
            await raw.send(GOOD.to_bytes())
            await got.wait_for(1)
            await wait_until(lambda: server.stats.dropped_total == 8, what="8 drops")
        finally:
            raw.close()
    assert server.stats.dropped == {"invalid": 6, "frames": 2}
    assert got.messages == [GOOD]


async def test_wrong_frame_counts_are_counted_on_the_awaited_and_the_drained_path() -> None:
    server = distro.create("zmq").server(max_concurrency=1000)
    got = Recorder()
    server.post("/ok", got)
    async with server:
        raw = _raw_dealer(server.address[1])
        try:
            # One alone (the receive loop is waiting), then a burst (taken without waiting).
            await raw.send_multipart([b"a", b"b", b"c"])
            await wait_until(lambda: server.stats.dropped.get("frames") == 1, what="first")
            for _ in range(200):
                await raw.send_multipart([b"a", b"b"])
                await raw.send(GOOD.to_bytes())
            await got.wait_for(200, timeout=10)
            await wait_until(lambda: server.stats.dropped.get("frames") == 201, what="burst")
        finally:
            raw.close()
    assert server.stats.handled == 200


async def test_a_peer_choosing_its_own_routing_id_is_answered() -> None:
    server = distro.create("zmq").server()
    server.get("/ping", lambda m: "pong")
    async with server:
        raw = _raw_dealer(server.address[1], ROUTING_ID=b"chosen-id")  # type: ignore[arg-type]
        try:
            request = distro.message({"uri": "/ping", "replyTo": "raw"})
            for _ in range(3):
                await raw.send(request.to_bytes())
                [frame] = await asyncio.wait_for(raw.recv_multipart(), 5)
                reply = distro.parse(frame)
                assert reply.headers["inReplyTo"] == request.id
                assert reply.payload == "pong"
                request = distro.message({"uri": "/ping", "replyTo": "raw"})
        finally:
            raw.close()


@pytest.mark.parametrize(
    "junk",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 60,  # bad greeting
        b"\x00" * 4096,
    ],
)
async def test_raw_tcp_garbage_on_the_port_does_not_stop_the_server(junk: bytes) -> None:
    factory = distro.create("zmq")
    server = factory.server()
    server.get("/still", lambda m: "here")
    async with server:
        host, port = server.address
        _, writer = await asyncio.open_connection(host, port)
        writer.write(junk + os.urandom(512))
        await writer.drain()
        # A second connection that says nothing at all, held open meanwhile.
        silent = socket.create_connection((host, port))
        try:
            async with factory.client(address=host, port=port) as client:
                reply = await client.request(distro.message({"uri": "/still"}), timeout=5)
        finally:
            silent.close()
            writer.close()
        assert reply.payload == "here"


async def test_a_reply_to_a_vanished_peer_is_counted_not_lost() -> None:
    factory = distro.create("zmq")
    server = factory.server()
    gate = asyncio.Event()

    @server.get("/slow")
    async def slow(msg: distro.Message) -> str:
        await gate.wait()
        return "late"

    server.get("/ping", lambda m: "pong")
    attempts = 0
    async with server:
        port = server.address[1]
        async with factory.client(port=port) as witness:
            # ROUTER_MANDATORY turns a reply to a gone peer into an error the server counts;
            # the ROUTER learns of the disconnect asynchronously, so try a few times.
            while not server.stats.dropped.get("reply_failed") and attempts < 10:
                attempts += 1
                gate.clear()
                raw = _raw_dealer(port)
                await raw.send(distro.message({"uri": "/slow", "replyTo": "raw"}).to_bytes())
                sent = 2 * attempts  # the slow request and the witness's ping, per attempt
                await wait_until(lambda n=sent: server.stats.received >= n - 1, what="recv")
                raw.close()
                reply = await witness.request(distro.message({"uri": "/ping"}), timeout=5)
                assert reply.payload == "pong"
                gate.set()
                await wait_until(
                    lambda n=sent: (
                        server.stats.replies_sent + server.stats.dropped.get("reply_failed", 0) == n
                    ),
                    what="the reply to be sent or counted",
                )
    assert server.stats.dropped.get("reply_failed", 0) >= 1


async def test_a_peer_that_never_reads_costs_counted_replies_and_close_stays_bounded() -> None:
    factory = distro.create("zmq")
    server = factory.server(hwm=4, linger=0.2)
    big = "r" * 65536
    server.get("/big", lambda m: big)
    server.get("/ping", lambda m: "pong")
    count = 400  # 400 x 64 KiB is far more than the loopback socket buffers hold
    async with server:
        port = server.address[1]
        stalled = _raw_dealer(port, RCVHWM=1, RCVBUF=4096)
        try:
            for _ in range(count):
                await stalled.send(distro.message({"uri": "/big", "replyTo": "s"}).to_bytes())
            await wait_until(
                lambda: (
                    server.stats.replies_sent + server.stats.dropped.get("reply_failed", 0) == count
                ),
                timeout=15,
                what="every reply sent or counted",
            )
            assert server.stats.dropped.get("reply_failed", 0) > 0
            async with factory.client(port=port) as client:
                reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
            assert reply.payload == "pong"
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(server.aclose(), 5)
            assert loop.time() - started < 2
        finally:
            stalled.close()


async def test_random_multipart_garbage_is_all_accounted_for() -> None:
    rng = random.Random(20240613)
    server = distro.create("zmq").server()
    got = Recorder()
    server.post("/ok", got)
    count = 300
    async with server:
        raw = _raw_dealer(server.address[1])
        try:
            for _ in range(count):
                parts = [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 5))]
                await raw.send_multipart(parts)
            await raw.send(GOOD.to_bytes())
            await got.wait_for(1)
            await wait_until(lambda: server.stats.dropped_total == count, what="every drop")
        finally:
            raw.close()
    dropped = server.stats.dropped
    assert set(dropped) <= {"invalid", "frames"}
    # Single frames reach the core, which refuses them; the rest never do.
    assert server.stats.received == dropped.get("invalid", 0) + 1
    assert got.messages == [GOOD]
