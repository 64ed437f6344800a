"""A closing server refuses what it will not handle, and answers a refused request at once
with the error code ``closing`` (docs/wire-format.md, "Error codes"): a request that arrives
while the server closes, and one still waiting in its queues for a handler slot. The caller
hears it at once instead of waiting for its time-out (and a confirmed send goes elsewhere).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core.testing import Recorder, wait_until
from distro_core.transport import Outcome

TRANSPORTS = ["memory", "udp4", "tcp"]


def options(name: str, **more: Any) -> dict[str, Any]:
    return {"port": 0, **more} if name == "memory" else {"address": "127.0.0.1", "port": 0, **more}


def client_options(name: str, server: distro.Server) -> dict[str, Any]:
    host, port = server.address
    return {"port": port} if name == "memory" else {"address": host, "port": port}


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_request_that_comes_while_the_server_closes_is_answered_closing_at_once(
    name: str,
) -> None:
    factory = distro.create(name)
    server = factory.server(options(name, close_timeout=5))
    started = asyncio.Event()
    release = asyncio.Event()
    other = Recorder()
    server.post("/other", other)

    @server.post("/slow")
    async def slow(msg: distro.Message) -> str:
        started.set()
        await release.wait()
        return "finished"

    await server.start()
    async with factory.client(client_options(name, server)) as client:
        running = asyncio.ensure_future(
            client.request(distro.message({"uri": "/slow", "verb": "POST"}), timeout=10)
        )
        await asyncio.wait_for(started.wait(), 5)
        closing = asyncio.ensure_future(server.aclose())
        await asyncio.sleep(0)
        assert not closing.done() and not server.is_serving
        began = time.monotonic()
        with pytest.raises(distro.RemoteError) as caught:
            await client.request(distro.message({"uri": "/other", "verb": "POST"}), timeout=10)
        took = time.monotonic() - began
        assert caught.value.code == "closing"
        assert took < 2.0, took  # at once, not at the request's 10 s time-out
        # A one-way message is refused too, unanswered.
        await client.send(distro.message({"uri": "/other", "verb": "POST"}))
        await wait_until(lambda: server.stats.dropped.get("closing") == 2)
        assert not closing.done()
        release.set()  # the handler in flight still finishes and answers
        assert (await asyncio.wait_for(running, 5)).payload == "finished"
        await asyncio.wait_for(closing, 5)
    assert other.messages == []
    assert server.stats.dropped == {"closing": 2}
    assert server.stats.handled == 1
    assert server.stats.replies_sent == 2


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_request_still_queued_when_the_server_closes_is_answered_closing(
    name: str,
) -> None:
    factory = distro.create(name)
    # Eight slots: one client may hold seven (the last is the reserve); its eighth waits.
    server = factory.server(options(name, max_concurrency=8, close_timeout=5))
    got = Recorder()
    release = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> int:
        got(msg)
        await release.wait()
        return int(msg.payload)

    await server.start()
    async with factory.client(client_options(name, server)) as client:
        running = [
            asyncio.ensure_future(
                client.request(distro.message({"uri": "/slow", "verb": "POST"}, n), timeout=10)
            )
            for n in range(7)
        ]
        await got.wait_for(7)
        queued = asyncio.ensure_future(
            client.request(distro.message({"uri": "/slow", "verb": "POST"}, 7), timeout=10)
        )
        await wait_until(lambda: server.stats.received == 8)
        assert not queued.done()
        began = time.monotonic()
        closing = asyncio.ensure_future(server.aclose())
        with pytest.raises(distro.RemoteError) as caught:
            await asyncio.wait_for(queued, 5)
        assert caught.value.code == "closing"
        assert time.monotonic() - began < 2.0
        release.set()
        replies = await asyncio.wait_for(asyncio.gather(*running), 5)
        assert [reply.payload for reply in replies] == list(range(7))
        await asyncio.wait_for(closing, 5)
    assert got.payloads == list(range(7))
    assert server.stats.dropped == {"closing": 1}


async def test_over_udp_a_closing_reply_is_never_larger_than_the_request() -> None:
    server = distro.create("udp4").server(address="127.0.0.1", port=0, close_timeout=5)
    started = asyncio.Event()
    release = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        started.set()
        await release.wait()

    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    closing = None
    try:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(distro.message({"uri": "/slow", "verb": "POST"}).to_bytes(), server.address)
        await asyncio.wait_for(started.wait(), 5)
        closing = asyncio.ensure_future(server.aclose())
        await asyncio.sleep(0)
        tiny = distro.message({"uri": "/x", "replyTo": "r"}, id="1").to_bytes()
        sock.sendto(tiny, server.address)  # no error reply fits in it: none is sent
        await wait_until(lambda: server.stats.dropped.get("amplification") == 1)
        small = distro.message({"uri": "/x", "replyTo": "r"}, "p" * 40, id="2").to_bytes()
        sock.sendto(small, server.address)  # the compact form fits
        loop = asyncio.get_running_loop()
        data, _ = await loop.run_in_executor(None, sock.recvfrom, 65536)
    finally:
        sock.close()
        release.set()
        if closing is not None:
            await asyncio.wait_for(closing, 5)
        await server.aclose()
    assert len(data) <= len(small)
    reply = distro.parse(data)
    assert reply.headers["inReplyTo"] == "2" and reply.headers["code"] == "closing"
    assert server.stats.dropped == {"closing": 2, "amplification": 1}


# -- settling, and pub/sub: a tiny in-test transport --------------------------------------------


class Peer(kit.Peer):
    settles = True

    def __init__(self, seen: list[tuple[str, Any]]) -> None:
        super().__init__("127.0.0.1")
        self.seen = seen

    def send(self, data: bytes, reply_to: str) -> None:
        self.seen.append(("reply", distro.parse(data)))

    def settle(self, outcome: Outcome, detail: str | None = None) -> None:
        self.seen.append(("settle", (outcome, detail)))


class Listener(kit.Listener):
    address = ("fake", 1)

    async def aclose(self) -> None:
        pass


def fake(fan_out: bool) -> type[kit.Transport]:
    class Fake(kit.Transport):
        name = "fake"
        api_version = kit.API_VERSION
        capabilities = kit.Capabilities(acknowledgements=False, fan_out=fan_out)

        @classmethod
        def from_options(cls, options: Mapping[str, Any]) -> Fake:
            return cls()

        async def listen(self, receiver: kit.Receiver) -> kit.Listener:
            return Listener()

        async def connect(
            self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
        ) -> kit.Connection:
            raise NotImplementedError

    return Fake


@pytest.mark.parametrize("fan_out", [False, True])
async def test_a_request_refused_while_closing_settles_returned_and_is_answered_unless_pub_sub(
    fan_out: bool,
) -> None:
    server = distro.Server(fake(fan_out)(), logger=distro.create("memory").logger)
    started = asyncio.Event()
    release = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        started.set()
        await release.wait()

    await server.start()
    first: list[tuple[str, Any]] = []
    server.frame_received(distro.message({"uri": "/slow", "verb": "POST"}).to_bytes(), Peer(first))
    await asyncio.wait_for(started.wait(), 5)
    closing = asyncio.ensure_future(server.aclose())
    await asyncio.sleep(0)
    seen: list[tuple[str, Any]] = []
    request = distro.message({"uri": "/slow", "verb": "POST", "replyTo": "bus"}, id="r1")
    server.frame_received(request.to_bytes(), Peer(seen))
    garbage: list[tuple[str, Any]] = []
    server.frame_received(b"not a message", Peer(garbage))
    release.set()
    await asyncio.wait_for(closing, 5)
    settles = [what for kind, what in seen if kind == "settle"]
    replies = [what for kind, what in seen if kind == "reply"]
    assert settles == [(Outcome.RETURNED, "closing")]
    if fan_out:
        assert replies == []  # another server on the bus may take it
    else:
        assert [(r.headers["inReplyTo"], r.headers["code"]) for r in replies] == [("r1", "closing")]
    assert garbage == [("settle", (Outcome.RETURNED, "closing"))]
    assert first == [("settle", (Outcome.HANDLED, None))]
    assert server.stats.dropped == {"closing": 2}
