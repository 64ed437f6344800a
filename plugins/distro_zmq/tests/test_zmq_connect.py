"""A zmq client and a server that is not there (yet, or any more): ``open()`` waits for it
within ``connect_timeout``; a link that breaks is reported and sends fail fast until ZeroMQ has
reconnected."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until


def _free_port() -> int:
    """A tcp port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def post(uri: str, payload: object = None) -> distro.Message:
    return distro.message({"uri": uri, "verb": "POST"}, payload)


async def test_a_client_opened_before_its_server_connects_once_the_server_starts() -> None:
    factory = distro.create("zmq")
    port = _free_port()
    client = factory.client(port=port, connect_timeout=5)
    got = Recorder()
    server = factory.server(port=port)
    server.post("/early", got)
    started = time.monotonic()
    opening = asyncio.create_task(client.open())
    try:
        await asyncio.sleep(0.5)  # the delay under test: the server starts late
        assert not opening.done(), "open() returned before any server listened"
        async with server:
            await asyncio.wait_for(opening, 5)
            took = time.monotonic() - started
            await client.send(post("/early", "hello"))
            [msg] = await got.wait_for(1, timeout=5)
    finally:
        opening.cancel()
        await asyncio.gather(opening, return_exceptions=True)
        await client.aclose()
    assert msg.payload == "hello"
    assert 0.45 <= took < 4.5, f"open() took {took:.2f}s"


async def test_open_with_no_server_raises_after_connect_timeout() -> None:
    port = _free_port()
    client = distro.create("zmq").client(port=port, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(distro.ConnectionError) as caught:
        await client.open()
    took = time.monotonic() - started
    assert 0.45 <= took < 3, f"gave up after {took:.2f}s, connect_timeout was 0.5 s"
    text = str(caught.value)
    assert f"127.0.0.1:{port}" in text and "0.5s" in text and "connect_timeout" in text


@pytest.fixture
def silent_port() -> Iterator[int]:
    """The port of a plain TCP listener that accepts and never speaks ZeroMQ's protocol."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_tcp_listener_that_is_not_zeromq_does_not_count_as_connected(
    silent_port: int,
) -> None:
    # "Connected" is ZeroMQ's completed handshake, not a TCP connection: the kernel accepts
    # these, but nothing ever answers the ZMTP greeting.
    client = distro.create("zmq").client(port=silent_port, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(distro.ConnectionError, match="connect_timeout"):
        await client.open()
    assert time.monotonic() - started < 3


async def test_a_lost_server_fails_waiting_requests_and_sends_until_it_is_back() -> None:
    import zmq

    factory = distro.create("zmq")
    # First a bare ROUTER that takes requests and never answers, then it goes away (as a
    # server process that dies), then a distro server comes up on the same port.
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    got = Recorder()
    try:
        async with factory.client(port=port) as client:
            pending = asyncio.create_task(client.request(distro.message({"uri": "/x"}), 20))
            await wait_until(lambda: router.poll(0) != 0, what="the request to arrive")
            started = time.monotonic()
            router.close(linger=0)
            # The link's loss fails the request at once, not at its 20 s time-out.
            with pytest.raises(distro.ConnectionError, match="lost"):
                await asyncio.wait_for(pending, 5)
            assert time.monotonic() - started < 5
            # While the server is down, a send fails at once instead of queueing.
            started = time.monotonic()
            with pytest.raises(distro.ConnectionError, match="no connection"):
                await client.send(post("/note", "lost"))
            assert time.monotonic() - started < 0.5
            # A server comes up on the port: ZeroMQ reconnects and sends go out again.
            server = factory.server(port=port)
            server.post("/note", got)
            async with server:
                deadline = time.monotonic() + 5
                while True:
                    try:
                        await client.send(post("/note", "back"))
                        break
                    except distro.ConnectionError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.02)
                await got.wait_for(1)
    finally:
        router.close(linger=0)
        context.term()
    assert got.payloads == ["back"]
