"""The memory transport's own behaviour: bounded queues that push back on senders, and one
network per event loop unless a ``MemoryNetwork`` is shared (the conformance suite covers the
rest)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core.testing import Recorder, wait_until

T = TypeVar("T")


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("memory")


def job(n: object) -> distro.Message:
    return distro.message({"uri": "/job", "verb": "POST"}, n)


@asynccontextmanager
async def blocked_server(
    factory: distro.Factory, **options: Any
) -> AsyncIterator[tuple[distro.Server, Recorder, asyncio.Event]]:
    """A server whose one handler slot is taken by the first ``/job`` until ``release`` is set:
    it pauses reading, so every later frame stays in its inbound queue."""
    server = factory.server(port=0, max_concurrency=1, **options)
    got = Recorder()
    release = asyncio.Event()

    @server.post("/job")
    async def handle(msg: distro.Message) -> None:
        got(msg)
        await release.wait()

    async with server:
        yield server, got, release
        release.set()


async def turns(count: int = 50) -> None:
    """Let the loop run ``count`` times: memory delivery within one loop takes a few turns."""
    for _ in range(count):
        await asyncio.sleep(0)


class LoopThread:
    """An event loop of its own, running in a thread (as another service in the process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop from plain code, blocking."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop from another loop, without blocking that one."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), 10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextmanager
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


async def start_server(factory: distro.Factory, answer: str, **options: Any) -> distro.Server:
    """Make and start a server answering ``GET /who`` with ``answer``, on the running loop."""
    server = factory.server(**options)
    server.get("/who", lambda msg: answer)
    await server.start()
    return server


async def ask(factory: distro.Factory, **options: Any) -> object:
    """Open a client on the running loop and ask ``GET /who``."""
    async with factory.client(**options) as client:
        reply = await client.request(distro.message({"uri": "/who"}), timeout=5)
        return reply.payload


# -- bounded queues -----------------------------------------------------------------------


async def test_a_sender_waits_while_the_servers_queue_is_full_and_resumes_as_it_reads(
    factory: distro.Factory,
) -> None:
    async with blocked_server(factory, queue_size=4) as (server, got, release):
        sent = 0
        async with factory.client(port=server.address[1]) as client:

            async def send_all() -> None:
                nonlocal sent
                for i in range(10):
                    await client.send(job(i))
                    sent += 1

            sending = asyncio.ensure_future(send_all())
            await got.wait_for(1)
            await turns()
            # Frame 0 holds the only handler slot, frames 1-4 fill the queue of 4: the sixth
            # send waits for room instead of queueing without bound.
            assert sent == 5
            assert not sending.done()
            release.set()
            await asyncio.wait_for(sending, 5)
            await got.wait_for(10)
        assert got.payloads == list(range(10))
        assert server.stats.dropped == {}


async def test_nothing_is_lost_or_reordered_under_back_pressure(factory: distro.Factory) -> None:
    server = factory.server(port=0, max_concurrency=2, queue_size=8)
    got: dict[str, list[int]] = {}

    @server.post("/job")
    async def handle(msg: distro.Message) -> None:
        await asyncio.sleep(0)
        got.setdefault(msg.payload["from"], []).append(msg.payload["n"])

    count = 2000
    async with server:
        clients = [factory.client(port=server.address[1]) for _ in range(3)]

        async def one_by_one(name: str, client: distro.Client) -> None:
            async with client:
                for n in range(count):
                    await client.send(job({"from": name, "n": n}))

        await asyncio.wait_for(
            asyncio.gather(*(one_by_one(str(i), c) for i, c in enumerate(clients))), 30
        )
        await wait_until(lambda: sum(map(len, got.values())) == 3 * count, what="every frame")
    assert got == {str(i): list(range(count)) for i in range(3)}
    assert server.stats.dropped == {}


async def test_concurrent_sends_on_one_connection_keep_their_order(
    factory: distro.Factory,
) -> None:
    async with blocked_server(factory, queue_size=3) as (server, got, release):
        async with factory.client(port=server.address[1]) as client:
            sending = asyncio.gather(*(client.send(job(i)) for i in range(50)))
            await got.wait_for(1)
            await turns()
            assert not sending.done()
            release.set()
            await asyncio.wait_for(sending, 5)
            await got.wait_for(50)
        assert got.payloads == list(range(50))


class _Frames:
    """Records the frames a listener hands over (a stand-in for the core's Server)."""

    routes: tuple[kit.RouteInfo, ...] = ()
    has_catch_all = True

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def frame_received(self, data: bytes, peer: kit.Peer) -> None:
        self.frames.append(data)

    def frame_dropped(self, reason: str, detail: str) -> None:
        raise AssertionError(f"dropped ({reason}): {detail}")


class _Nothing:
    """A client receiver for a connection that only sends."""

    def frame_received(self, data: bytes) -> None:
        raise AssertionError("nothing comes back on this connection")

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def request_failed(self, request_id: str, failure: kit.RequestFailure, detail: str) -> None:
        pass


async def test_a_send_never_overtakes_an_earlier_one_woken_but_not_yet_run(
    factory: distro.Factory,
) -> None:
    core = _Frames()
    listener = await factory.transport.from_options({"queue_size": 2}).listen(core)
    options = {"port": listener.address[1]}
    connection = await factory.transport.from_options(options).connect(_Nothing())
    frames = [job(i).to_bytes() for i in range(4)]
    try:
        listener.pause_reading()
        for data in frames[:2]:
            await connection.send(data, job(None))
        earlier = asyncio.ensure_future(connection.send(frames[2], job(None)))
        await turns()
        assert not earlier.done()  # the queue of 2 is full
        # The later send starts in the same turn as the room appears and before the earlier
        # one resumes: it must queue behind it, not take the room first.
        later = asyncio.ensure_future(connection.send(frames[3], job(None)))
        listener.resume_reading()
        await asyncio.wait_for(asyncio.gather(earlier, later), 5)
        await wait_until(lambda: len(core.frames) == 4, what="four frames")
        assert core.frames == frames
    finally:
        await connection.aclose()
        await listener.aclose()


async def test_a_send_cancelled_just_after_it_was_given_room_gives_the_room_back(
    factory: distro.Factory,
) -> None:
    core = _Frames()
    listener = await factory.transport.from_options({"queue_size": 1}).listen(core)
    options = {"port": listener.address[1], "send_timeout": 1.0}
    connection = await factory.transport.from_options(options).connect(_Nothing())
    frames = [job(i).to_bytes() for i in range(3)]
    try:
        listener.pause_reading()
        await connection.send(frames[0], job(None))
        granted = asyncio.ensure_future(connection.send(frames[1], job(None)))
        await turns()
        listener.resume_reading()  # frame 0 goes; the room is granted to the waiting send...
        granted.cancel()  # ...which is cancelled before it can use it
        with pytest.raises(asyncio.CancelledError):
            await granted
        await asyncio.wait_for(connection.send(frames[2], job(None)), 5)  # the room is back
        await wait_until(lambda: len(core.frames) == 2, what="two frames")
        assert core.frames == [frames[0], frames[2]]
    finally:
        await connection.aclose()
        await listener.aclose()


async def test_a_cancelled_waiting_send_gives_its_room_back_and_never_arrives(
    factory: distro.Factory,
) -> None:
    async with blocked_server(factory, queue_size=1) as (server, got, release):
        async with factory.client(port=server.address[1]) as client:
            await client.send(job("handled"))
            await got.wait_for(1)
            await client.send(job("queued"))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.send(job("cancelled")), 0.1)
            release.set()
            for i in range(20):  # the queue of 1 still turns over: no slot was lost
                await asyncio.wait_for(client.send(job(i)), 5)
            await got.wait_for(22)
        assert got.payloads == ["handled", "queued", *range(20)]


async def test_a_send_waiting_longer_than_send_timeout_fails(factory: distro.Factory) -> None:
    async with blocked_server(factory, queue_size=1) as (server, got, _):
        port = server.address[1]
        async with factory.client(port=port, send_timeout=0.1) as client:
            await client.send(job(0))
            await got.wait_for(1)
            await client.send(job(1))
            with pytest.raises(distro.ConnectionError, match=r"took no frames for 0\.1s"):
                await client.send(job(2))


async def test_closing_the_server_fails_waiting_senders_and_counts_the_frames_it_held(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0, max_concurrency=1, queue_size=3, close_timeout=0.05)
    got = Recorder()
    never = asyncio.Event()

    @server.post("/job")
    async def handle(msg: distro.Message) -> None:
        got(msg)
        await never.wait()

    await server.start()
    async with factory.client(port=server.address[1]) as client:
        await client.send(job(0))
        await got.wait_for(1)
        for i in range(1, 4):
            await client.send(job(i))
        waiting = asyncio.ensure_future(client.send(job(4)))
        await turns()
        assert not waiting.done()
        await server.aclose()
        with pytest.raises(distro.ConnectionError, match="closed"):
            await asyncio.wait_for(waiting, 5)
    assert got.payloads == [0]
    assert server.stats.dropped == {"closing": 3}


async def test_a_client_that_does_not_take_its_replies_has_them_dropped_and_counted(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0)
    server.get("/who", lambda msg: "me")
    async with server, factory.client(port=server.address[1], queue_size=1) as client:
        # Both requests reach the server before the client's loop takes the first reply, which
        # fills its reply queue of 1: the second reply cannot wait (Peer.send is synchronous).
        first, second = await asyncio.gather(
            client.request(distro.message({"uri": "/who"}), timeout=5),
            client.request(distro.message({"uri": "/who"}), timeout=0.3),
            return_exceptions=True,
        )
        assert isinstance(first, distro.Message) and first.payload == "me"
        assert isinstance(second, distro.RequestTimeout)
        # With room again, replies flow.
        reply = await client.request(distro.message({"uri": "/who"}), timeout=5)
        assert reply.payload == "me"
    assert server.stats.dropped == {"reply_failed": 1}
    assert server.stats.replies_sent == 2


async def test_a_sender_on_another_thread_waits_for_room_too(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    async with blocked_server(factory, queue_size=4, network=network) as (server, got, release):
        sent = 0

        def blocking() -> None:
            nonlocal sent
            with factory.sync_client(port=server.address[1], network=network) as client:
                for i in range(10):
                    client.send(job(i))
                    sent += 1

        sending = asyncio.ensure_future(asyncio.to_thread(blocking))
        await got.wait_for(1)
        await wait_until(lambda: sent == 5, what="five sends through")
        # A negative check needs a window: the sixth send must stay blocked.
        await asyncio.sleep(0.2)
        assert sent == 5 and not sending.done()
        release.set()
        await asyncio.wait_for(sending, 10)
        await got.wait_for(10)
    assert got.payloads == list(range(10))
    assert server.stats.dropped == {}


# -- one network per event loop, unless one is shared --------------------------------------


async def test_each_event_loop_has_a_network_of_its_own(factory: distro.Factory) -> None:
    with loop_thread() as other:
        theirs = await other.arun(start_server(factory, "theirs", port=7000))
        try:
            # The same port is free on this loop, and a client here reaches the server here.
            ours = factory.server(port=7000)
            ours.get("/who", lambda msg: "ours")
            async with ours:
                assert await ask(factory, port=7000) == "ours"
                assert await other.arun(ask(factory, port=7000)) == "theirs"
            # A port bound only on the other loop is nothing here.
            async with factory.client(port=7000) as client:
                with pytest.raises(distro.ConnectionError, match="nothing listens"):
                    await client.send(distro.message({"uri": "/who"}))
        finally:
            await other.arun(theirs.aclose())


async def test_a_shared_network_joins_loops_in_both_directions(factory: distro.Factory) -> None:
    network = distro.MemoryNetwork()
    with loop_thread() as other:
        theirs = await other.arun(start_server(factory, "theirs", port=0, network=network))
        try:
            port = theirs.address[1]
            assert await ask(factory, port=port, network=network) == "theirs"
            with pytest.raises(distro.ConnectionError, match="nothing listens"):
                await ask(factory, port=port)  # without it, this loop's own network
        finally:
            await other.arun(theirs.aclose())


def test_a_blocking_client_finds_a_server_on_another_loop_without_a_network(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0)  # made in plain code: it joins the loop it starts on
    server.get("/who", lambda msg: "there")
    with loop_thread() as other:
        other.run(server.start())
        try:
            assert other.run(ask(factory, port=server.address[1])) == "there"
            with factory.sync_client(port=server.address[1]) as client:
                reply = client.request(distro.message({"uri": "/who"}), timeout=5)
            assert reply.payload == "there"
        finally:
            other.run(server.aclose())


def test_a_blocking_client_refuses_a_port_bound_on_several_loops(
    factory: distro.Factory,
) -> None:
    with loop_thread() as one, loop_thread() as two:
        first = one.run(start_server(factory, "one", port=7001))
        second = two.run(start_server(factory, "two", port=7001))
        try:
            client = factory.sync_client(port=7001)
            with pytest.raises(distro.ConnectionError, match="network=MemoryNetwork"):
                client.open()
            network = distro.MemoryNetwork()
            third = two.run(start_server(factory, "three", port=7001, network=network))
            try:
                with factory.sync_client(port=7001, network=network) as client:
                    reply = client.request(distro.message({"uri": "/who"}), timeout=5)
                assert reply.payload == "three"
            finally:
                two.run(third.aclose())
        finally:
            one.run(first.aclose())
            two.run(second.aclose())


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"queue_size": 0}, ValueError, "queue_size"),
        ({"queue_size": "8"}, ValueError, "queue_size"),
        ({"queue_size": True}, ValueError, "queue_size"),
        ({"send_timeout": 0}, ValueError, "send_timeout"),
        ({"network": "shared"}, TypeError, "network.*MemoryNetwork"),
        ({"address": "127.0.0.1"}, ValueError, "address"),
        ({"queue": 8}, TypeError, "unknown option"),
    ],
)
def test_bad_options_are_refused(
    factory: distro.Factory, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        factory.server(port=0, **options)
    with pytest.raises(error, match=match):
        factory.client(port=1, **options)
