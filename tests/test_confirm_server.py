"""The server's side of confirmed sends (docs/wire-format.md, "Confirmed sends"), over memory,
udp4 and tcp, spoken in the wire form: a request whose headers carry ``"confirm": true`` is
handled once per window of ids, and a repeat is answered with the very bytes of the first
reply (or not at all while the first is still being handled).

The frames are sent byte for byte through each transport's client contract (a link that hands
the exact bytes to the transport and records every frame that comes back), so what is tested
is the server against the wire, whatever a client does.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core.testing import Recorder, wait_until

TRANSPORTS = ["memory", "udp4", "tcp"]


def make_server(name: str, **own: Any) -> distro.Server:
    """A server on ``name`` bound to a free local port, with the server options ``own``."""
    factory = distro.create(name)
    options = {"port": 0} if name == "memory" else {"address": "127.0.0.1", "port": 0}
    return distro.Server(factory.transport.from_options(options), logger=factory.logger, **own)


class Link:
    """A client's link to a server through the transport contract: frames go out exactly as
    given, every frame that comes back is recorded."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self._changed = asyncio.Event()
        self._conn: kit.Connection | None = None

    async def open(self, name: str, server: distro.Server) -> Link:
        host, port = server.address
        options = {"port": port} if name == "memory" else {"address": host, "port": port}
        self._conn = await distro.create(name).transport.from_options(options).connect(self)
        return self

    @property
    def reply_to(self) -> str:
        assert self._conn is not None
        return self._conn.reply_to

    async def send(self, frame: bytes) -> None:
        assert self._conn is not None
        await self._conn.request(frame, distro.parse(frame))

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[bytes]:
        """Wait until ``count`` frames came back; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.frames)} of {count} replies in {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return list(self.frames)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()

    # -- the ClientReceiver contract ------------------------------------------------------

    def frame_received(self, data: bytes) -> None:
        self.frames.append(data)
        self._changed.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def request_failed(self, request_id: str, failure: kit.RequestFailure, detail: str) -> None:
        raise AssertionError(f"request {request_id} failed: {failure} {detail}")

    def unheard(self, detail: str) -> None:
        raise AssertionError(f"unheard: {detail}")


def request(
    link: Link,
    uri: str,
    payload: Any = None,
    confirm: Any = True,
    msg_id: str | None = None,
    **extra: Any,
) -> bytes:
    """The wire form of a request to ``uri`` from ``link``: with ``"confirm": confirm``
    unless ``confirm`` is None."""
    headers: dict[str, Any] = {"uri": uri, "verb": "POST", "replyTo": link.reply_to}
    headers["replyWithin"] = 5000
    if confirm is not None:
        headers["confirm"] = confirm
    headers.update(extra)
    return distro.message(headers, payload, id=msg_id).to_bytes()


def reply_of(frame: bytes) -> distro.Message:
    msg = distro.parse(frame)
    assert msg.uri == "REPLY", frame
    return msg


async def served(name: str, server: distro.Server) -> Link:
    await server.start()
    return await Link().open(name, server)


# -- repeats --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_repeat_is_handled_once_and_answered_again_with_the_same_bytes(name: str) -> None:
    server = make_server(name)
    got = Recorder({"total": 12})
    server.post("/order", got)
    link = await served(name, server)
    try:
        frame = request(link, "/order", {"n": 1})
        await link.send(frame)
        first = (await link.wait_for(1))[0]
        await link.send(frame)
        await link.send(frame)
        replies = await link.wait_for(3)
    finally:
        await link.aclose()
        await server.aclose()
    assert replies == [first, first, first]  # the same bytes: the same reply id, too
    answer = reply_of(first)
    assert answer.headers["inReplyTo"] == distro.parse(frame).id
    assert answer.payload == {"total": 12}
    assert got.payloads == [{"n": 1}]
    stats = server.stats
    assert (stats.received, stats.handled, stats.repeats, stats.replies_sent) == (3, 1, 2, 3)
    assert stats.dropped == {}


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_repeat_while_the_first_is_handled_gets_nothing_and_the_first_answers(
    name: str,
) -> None:
    server = make_server(name)
    started = asyncio.Event()
    release = asyncio.Event()
    calls = []

    @server.post("/slow")
    async def slow(msg: distro.Message) -> str:
        calls.append(msg.id)
        started.set()
        await release.wait()
        return "done"

    link = await served(name, server)
    try:
        frame = request(link, "/slow")
        await link.send(frame)
        await asyncio.wait_for(started.wait(), 5)
        await link.send(frame)
        await link.send(frame)
        await wait_until(lambda: server.stats.repeats == 2, what="two repeats")
        assert link.frames == [] and server.stats.replies_sent == 0
        release.set()
        first = (await link.wait_for(1))[0]
        await link.send(frame)  # once finished, a repeat gets the reply again
        replies = await link.wait_for(2)
    finally:
        await link.aclose()
        await server.aclose()
    assert replies == [first, first]
    assert reply_of(first).payload == "done"
    assert calls == [distro.parse(frame).id]
    assert server.stats.repeats == 3
    assert server.stats.replies_sent == 2  # the repeats in progress got nothing


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_a_handler_error_is_remembered_and_sent_again(name: str) -> None:
    server = make_server(name)
    calls = []

    @server.post("/fail")
    def fail(msg: distro.Message) -> None:
        calls.append(msg.id)
        raise KeyError("x")

    link = await served(name, server)
    try:
        frame = request(link, "/fail", "large enough for a full error reply over udp")
        await link.send(frame)
        await link.wait_for(1)
        await link.send(frame)
        replies = await link.wait_for(2)
        # No handler: remembered too (its reply is the no_handler error).
        nowhere = request(link, "/nowhere")
        await link.send(nowhere)
        await link.wait_for(3)
        await link.send(nowhere)
        replies = await link.wait_for(4)
    finally:
        await link.aclose()
        await server.aclose()
    assert replies[0] == replies[1] and replies[2] == replies[3]
    error = reply_of(replies[0]).headers
    assert error["code"] == "handler_error"
    assert error["error"].startswith("internal error")  # the KeyError is in the server's log
    assert reply_of(replies[2]).headers["code"] == "no_handler"
    assert len(calls) == 1
    assert server.stats.handler_errors == 1
    assert server.stats.repeats == 2
    assert server.stats.dropped == {"no_route": 1}


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_requests_without_confirm_true_are_handled_every_time(name: str) -> None:
    server = make_server(name)
    got = Recorder("ok")
    server.post("/order", got)
    link = await served(name, server)
    try:
        frames = [
            request(link, "/order", 1, confirm=None),
            request(link, "/order", 2, confirm=False),
            request(link, "/order", 3, confirm="true"),  # only the JSON true asks
        ]
        for frame in frames:
            await link.send(frame)
            await link.send(frame)
        replies = await link.wait_for(6)
        await got.wait_for(6)
    finally:
        await link.aclose()
        await server.aclose()
    assert sorted(got.payloads) == [1, 1, 2, 2, 3, 3]  # type: ignore[type-var]
    assert len(set(replies)) == 6  # each handled afresh: a new reply id each time
    assert server.stats.repeats == 0


# -- the window's bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_an_id_pushed_out_of_the_window_is_handled_again(name: str) -> None:
    server = make_server(name, confirm_window=2)
    got = Recorder()
    server.post("/order", got)
    link = await served(name, server)
    try:
        frames = [request(link, "/order", n) for n in range(3)]
        for n, frame in enumerate(frames):
            await link.send(frame)
            await link.wait_for(n + 1)
        await link.send(frames[2])  # still remembered: answered, not handled
        await link.wait_for(4)
        await link.send(frames[0])  # the oldest of three went: handled again
        await link.wait_for(5)
    finally:
        await link.aclose()
        await server.aclose()
    assert got.payloads == [0, 1, 2, 0]
    assert server.stats.repeats == 1
    assert link.frames[3] == link.frames[2]
    assert link.frames[4] != link.frames[0]  # a new reply: a new id


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_an_id_older_than_the_window_age_is_handled_again(name: str) -> None:
    server = make_server(name, confirm_window_age=0.2)
    got = Recorder()
    server.post("/order", got)
    link = await served(name, server)
    try:
        frame = request(link, "/order", "a")
        await link.send(frame)
        await link.wait_for(1)
        await link.send(frame)
        await link.wait_for(2)
        await asyncio.sleep(0.3)  # the window's age passes
        await link.send(frame)
        await link.wait_for(3)
    finally:
        await link.aclose()
        await server.aclose()
    assert got.payloads == ["a", "a"]
    assert server.stats.repeats == 1
    assert link.frames[1] == link.frames[0] != link.frames[2]


async def test_a_window_of_no_ids_handles_every_repeat() -> None:
    server = make_server("memory", confirm_window=0)
    got = Recorder()
    server.post("/order", got)
    link = await served("memory", server)
    try:
        frame = request(link, "/order")
        for n in range(3):
            await link.send(frame)
            await link.wait_for(n + 1)
    finally:
        await link.aclose()
        await server.aclose()
    assert len(got.messages) == 3 and server.stats.repeats == 0


async def test_a_reply_larger_than_the_window_bytes_is_not_kept_but_the_id_is() -> None:
    server = make_server("memory", confirm_window_bytes=150)
    got = Recorder("x" * 200)
    server.post("/big", got)
    link = await served("memory", server)
    try:
        frame = request(link, "/big")
        await link.send(frame)
        await link.wait_for(1)
        await link.send(frame)
        await wait_until(lambda: server.stats.repeats == 1)
        small = request(link, "/big", msg_id="small")
        got.result = None
        await link.send(small)
        await link.wait_for(2)
        await link.send(small)
        await link.wait_for(3)
    finally:
        await link.aclose()
        await server.aclose()
    # The large reply went once; its repeat was not handled again and got nothing.
    assert len(got.messages) == 2
    assert [reply_of(f).headers["inReplyTo"] for f in link.frames] == [
        distro.parse(frame).id,
        "small",
        "small",
    ]


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("confirm_window", "10", TypeError),
        ("confirm_window", 1.5, TypeError),
        ("confirm_window", True, TypeError),
        ("confirm_window", -1, ValueError),
        ("confirm_window_bytes", None, TypeError),
        ("confirm_window_bytes", -5, ValueError),
        ("confirm_window_age", "60", TypeError),
        ("confirm_window_age", False, TypeError),
        ("confirm_window_age", 0, ValueError),
        ("confirm_window_age", -1.0, ValueError),
        ("confirm_window_age", math.inf, ValueError),
        ("confirm_window_age", math.nan, ValueError),
    ],
)
def test_window_options_are_checked(option: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=option):
        make_server("memory", **{option: value})


def test_window_options_take_good_values() -> None:
    make_server("memory", confirm_window=1, confirm_window_bytes=0, confirm_window_age=0.5)
    make_server("memory", confirm_window_age=3)


# -- handling that did not finish is forgotten ----------------------------------------------


async def test_a_confirmed_request_that_expired_in_the_queue_is_handled_when_it_comes_again() -> (
    None
):
    # Eight slots: one peer may hold seven (the last is the reserve), its eighth waits.
    server = make_server("memory", max_concurrency=8)
    release = asyncio.Event()
    got = Recorder()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        got(msg)
        await release.wait()

    link = await served("memory", server)
    try:
        for n in range(7):
            await link.send(request(link, "/slow", n))
        await got.wait_for(7)
        late = request(link, "/slow", "late", replyWithin=1)  # queued: it expires there
        await link.send(late)
        await wait_until(lambda: server.stats.received == 8)
        await asyncio.sleep(0.02)  # its 1 ms deadline passes while it waits
        release.set()
        await wait_until(lambda: server.stats.dropped.get("expired") == 1)
        await link.wait_for(7)
        await link.send(late)  # not a repeat: its first delivery was never handled
        await got.wait_for(8)
        await link.wait_for(8)
    finally:
        await link.aclose()
        await server.aclose()
    assert got.payloads == [*range(7), "late"]
    assert reply_of(link.frames[7]).headers["inReplyTo"] == distro.parse(late).id
    assert server.stats.repeats == 0


# -- datagrams: no amplification by a short repeat --------------------------------------------


async def test_over_udp_a_repeat_shorter_than_the_first_does_not_get_a_larger_reply() -> None:
    server = make_server("udp4")
    server.post("/big", lambda msg: "y" * 2000)
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    try:
        sock.bind(("127.0.0.1", 0))
        headers = {"uri": "/big", "verb": "POST", "replyTo": "raw", "confirm": True}
        full = distro.message(headers, "p" * 600, id="big-1").to_bytes()
        short = distro.message(headers, None, id="big-1").to_bytes()
        loop = asyncio.get_running_loop()
        sock.sendto(full, server.address)
        first, _ = await loop.run_in_executor(None, sock.recvfrom, 65536)
        sock.sendto(short, server.address)  # forged-looking: short, asks for a long reply
        await wait_until(lambda: server.stats.dropped.get("amplification") == 1)
        sock.sendto(full, server.address)  # the same frame again: answered
        again, _ = await loop.run_in_executor(None, sock.recvfrom, 65536)
    finally:
        sock.close()
        await server.aclose()
    assert again == first and len(first) > len(short)
    assert reply_of(first).payload == "y" * 2000
    assert server.stats.repeats == 2 and server.stats.replies_sent == 2


# -- settling, shedding and arrival order: frames handed straight to the server ----------------


class SettlingPeer(kit.Peer):
    """A peer that records the replies sent through it and how its frame was settled."""

    settles = True

    def __init__(self) -> None:
        super().__init__("127.0.0.1")
        self.replies: list[bytes] = []
        self.settled: list[tuple[kit.Outcome, str | None]] = []

    def send(self, data: bytes, reply_to: str) -> None:
        self.replies.append(data)

    def settle(self, outcome: kit.Outcome, detail: str | None = None) -> None:
        self.settled.append((outcome, detail))


def confirmed(uri: str, payload: Any = None, msg_id: str | None = None) -> bytes:
    headers = {"uri": uri, "verb": "POST", "replyTo": "r", "confirm": True}
    return distro.message(headers, payload, id=msg_id).to_bytes()


async def test_a_repeat_settles_handled_and_the_first_settles_as_usual() -> None:
    server = make_server("memory")
    server.post("/ok", lambda msg: "done")
    await server.start()
    try:
        frame = confirmed("/ok")
        first, repeat = SettlingPeer(), SettlingPeer()
        server.frame_received(frame, first)
        server.frame_received(frame, repeat)
    finally:
        await server.aclose()
    assert first.settled == [(kit.Outcome.HANDLED, None)]
    assert repeat.settled == [(kit.Outcome.HANDLED, None)]
    assert first.replies == repeat.replies and len(first.replies) == 1
    assert server.stats.handled == 1 and server.stats.repeats == 1


async def test_a_failure_is_not_remembered_where_the_transport_delivers_it_again() -> None:
    # A transport that settles deliveries (a group with redelivery) offers a failed message
    # again with the same id: that delivery runs the handlers, it is not a repeat.
    server = make_server("memory")
    server.post("/fail", lambda msg: 1 / 0)
    await server.start()
    try:
        frame = confirmed("/fail")
        first, again = SettlingPeer(), SettlingPeer()
        server.frame_received(frame, first)
        server.frame_received(frame, again)
    finally:
        await server.aclose()
    failed = (kit.Outcome.FAILED, "ZeroDivisionError: division by zero")
    assert first.settled == [failed] and again.settled == [failed]
    assert reply_of(first.replies[0]).headers["code"] == "handler_error"
    assert server.stats.handler_errors == 2 and server.stats.repeats == 0


async def test_a_confirmed_request_shed_as_overloaded_is_handled_when_it_comes_again() -> None:
    server = make_server("memory", max_concurrency=1, max_queued=1)
    release = asyncio.Event()
    got = Recorder()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> str:
        got(msg)
        await release.wait()
        return "ok"

    await server.start()
    try:
        server.frame_received(confirmed("/slow", "running"), SettlingPeer())
        server.frame_received(confirmed("/slow", "queued"), SettlingPeer())
        frame = confirmed("/slow", "shed", msg_id="shed-1")
        shed = SettlingPeer()
        server.frame_received(frame, shed)
        assert shed.settled == [(kit.Outcome.RETURNED, "overload")]
        assert reply_of(shed.replies[0]).headers["code"] == "overloaded"
        release.set()
        await got.wait_for(2)
        again = SettlingPeer()
        server.frame_received(frame, again)  # handled: the shed one never was
        await got.wait_for(3)
        await wait_until(lambda: again.settled != [])
        repeat = SettlingPeer()
        server.frame_received(frame, repeat)  # now it is a repeat
    finally:
        await server.aclose()
    assert got.payloads == ["running", "queued", "shed"]
    assert again.settled == repeat.settled == [(kit.Outcome.HANDLED, None)]
    assert repeat.replies == again.replies and reply_of(again.replies[0]).payload == "ok"
    assert server.stats.repeats == 1


async def test_confirmed_messages_count_as_their_peers_for_fair_share_and_order() -> None:
    # The server dispatches a confirmed request with a stand-in for its peer: the peer's
    # fair share and arrival order must see the same peer.
    server = make_server("memory", max_concurrency=8)
    release = asyncio.Event()
    order: list[Any] = []

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        order.append(msg.payload)
        await release.wait()

    server.post("/plain", lambda msg: order.append(msg.payload))
    await server.start()
    peer = SettlingPeer()
    try:
        for n in range(7):  # the peer holds the seven slots it may
            server.frame_received(confirmed("/slow", n), peer)
        await wait_until(lambda: len(order) == 7)
        server.frame_received(confirmed("/slow", "eighth"), peer)  # the reserve is not its
        server.frame_received(confirmed("/slow", "other"), SettlingPeer())  # it is this one's
        await wait_until(lambda: "other" in order)
        plain = distro.message({"uri": "/plain", "verb": "POST"}, "plain").to_bytes()
        server.frame_received(plain, peer)  # waits behind the peer's queued message
        assert order == [*range(7), "other"]
        release.set()
        await wait_until(lambda: len(order) == 10)
    finally:
        await server.aclose()
    assert order == [*range(7), "other", "eighth", "plain"]
    assert server.stats.dropped == {}
