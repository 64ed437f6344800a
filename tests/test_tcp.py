"""The tcp transport beyond the shared suite: bad input from raw sockets, frame limits,
reconnection, back-pressure, bounded close, and errors mapped to distro's own exceptions."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until


@pytest.fixture
def factory() -> distro.Factory:
    return distro.create("tcp")


def _ipv6_loopback_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _free_port() -> int:
    """A port nothing listens on (bound and released, so the kernel just handed it out)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def frame(headers: dict[str, Any], payload: Any = None, id: str = "raw-1") -> bytes:
    return json.dumps({"id": id, "headers": headers, "payload": payload}).encode() + b"\n"


@asynccontextmanager
async def serving(factory: distro.Factory, **options: Any) -> AsyncIterator[distro.Server]:
    """A server with ``POST /good`` (recorded in ``server.good``) and ``GET /echo/{word}``."""
    server = factory.server({"port": 0, **options})
    good = Recorder()
    server.post("/good", good)
    server.get("/echo/{word}", lambda m: m.params["word"])
    server.good = good  # type: ignore[attr-defined]
    async with server:
        yield server


async def still_serves(factory: distro.Factory, server: distro.Server, word: str = "ok") -> None:
    """A good request on a new connection is answered."""
    async with factory.client(port=server.address[1]) as client:
        reply = await client.request(distro.message({"uri": f"/echo/{word}"}), timeout=5)
    assert reply.payload == word


async def dropped(server: distro.Server, reason: str, count: int = 1) -> None:
    await wait_until(
        lambda: server.stats.dropped.get(reason, 0) >= count, what=f"{count} {reason} drop(s)"
    )
    assert server.stats.dropped[reason] == count


async def raw(server: distro.Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.address
    return await asyncio.open_connection(host, port)


@asynccontextmanager
async def polling() -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """``await polled()`` returns once the event loop has polled its sockets again, so bytes
    written to a loopback socket before the call have been read by then: each write is a read
    of its own. (A byte through a socket pair wakes the loop; one poll reports every socket
    ready by then, and their reads run before the waiting task resumes.)"""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)

    async def polled() -> None:
        theirs.send(b"!")
        await asyncio.wait_for(reader.readexactly(1), 5)

    try:
        yield polled
    finally:
        writer.close()
        theirs.close()


# -- bad input never stops a server -----------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"hello there, not json at all", id="garbage"),
        pytest.param(b'{"id":"1","headers":{"uri":"/good\xff\xfe"}}', id="invalid-utf8"),
        pytest.param(b"[1, 2, 3]", id="json-not-a-message"),
        pytest.param(b'{"id":"1","headers":{"verb":"POST"},"payload":1}', id="missing-uri"),
        pytest.param(b"\x00\x01\x02\r", id="control-bytes"),
    ],
)
async def test_a_bad_line_is_counted_and_the_server_goes_on(
    factory: distro.Factory, line: bytes
) -> None:
    async with serving(factory) as server:
        reader, writer = await raw(server)
        writer.write(line + b"\n")
        await writer.drain()
        await dropped(server, "invalid")
        # The same connection still works: a bad line is one bad message, not a bad stream.
        writer.write(frame({"uri": "/echo/same", "replyTo": "x"}, id="r1"))
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert reply["payload"] == "same"
        writer.close()
        await still_serves(factory, server)
    assert server.stats.received == 3


async def test_ten_megabytes_without_a_newline_disconnects_the_peer_only(
    factory: distro.Factory,
) -> None:
    async with serving(factory) as server:
        reader, writer = await raw(server)
        chunk = b"x" * 65536
        tracemalloc.start()
        try:
            sent = 0
            with pytest.raises(ConnectionError):
                while sent < 10 * 1024 * 1024:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                # Everything fitted in socket buffers before the reset came back: read it.
                if await asyncio.wait_for(reader.read(), 5) == b"":
                    raise ConnectionResetError("closed by the server")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        writer.close()
        await dropped(server, "too_large")
        assert peak < 6 * 1024 * 1024, f"peak traced memory {peak} bytes"
        await still_serves(factory, server)


async def test_a_smaller_max_frame_size_disconnects_earlier_and_the_client_reconnects(
    factory: distro.Factory,
) -> None:
    async with (
        serving(factory, max_frame_size=200) as server,
        factory.client(port=server.address[1]) as client,
    ):
        big = distro.message({"uri": "/echo/big"}, "z" * 300)
        started = time.monotonic()
        with pytest.raises(distro.ConnectionError):
            await client.request(big, timeout=10)
        assert time.monotonic() - started < 5  # failed at once, not by time-out
        await dropped(server, "too_large")
        reply = await client.request(distro.message({"uri": "/echo/small"}), timeout=5)
        assert reply.payload == "small"


async def test_a_stalled_peer_does_not_block_others_or_close(factory: distro.Factory) -> None:
    server = factory.server(port=0)
    server.get("/echo/{word}", lambda m: m.params["word"])
    await server.start()
    try:
        idle_reader, idle_writer = await raw(server)  # connects, sends nothing
        half_reader, half_writer = await raw(server)
        half_writer.write(b'{"id":"1","headers":{"uri":')  # and then nothing more
        await half_writer.drain()
        await still_serves(factory, server)
    finally:
        started = time.monotonic()
        await asyncio.wait_for(server.aclose(), 5)
    assert time.monotonic() - started < 3
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # the server closed them
    assert await asyncio.wait_for(half_reader.read(), 5) == b""
    assert server.stats.dropped == {"truncated": 1}  # the half frame, cut off by the close
    idle_writer.close()
    half_writer.close()


async def test_a_peer_that_never_reads_its_replies_is_bounded_and_close_is_too(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0)
    server.get("/blob", lambda m: "b" * 100_000)
    await server.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server.address)
    try:
        # 500 requests (30 kB) asking for 50 MB of replies, none of which is ever read.
        sock.sendall(
            b"".join(frame({"uri": "/blob", "replyTo": "x"}, id=f"q{i}") for i in range(500))
        )
        await wait_until(lambda: server.stats.replies_sent > 0, what="replies written")
        # The server stops reading a peer whose replies pile up, so most requests stay unread.
        with pytest.raises(AssertionError):
            await wait_until(lambda: server.stats.received >= 500, timeout=1.0)
        assert server.stats.replies_sent < 100
        started = time.monotonic()
        await asyncio.wait_for(server.aclose(), 5)
        assert time.monotonic() - started < 3
    finally:
        sock.close()
        await server.aclose()


async def test_a_peer_that_disconnects_mid_frame_is_counted_truncated(
    factory: distro.Factory,
) -> None:
    async with serving(factory) as server:
        _, writer = await raw(server)
        writer.write(frame({"uri": "/good", "verb": "POST"}, 1) + b'{"id":"2","headers":{"ur')
        await writer.drain()
        writer.close()
        await dropped(server, "truncated")
        await server.good.wait_for(1)  # type: ignore[attr-defined]
        await still_serves(factory, server)
    assert server.stats.handled == 2


async def test_many_frames_in_one_write_are_all_handled_in_order(factory: distro.Factory) -> None:
    async with serving(factory) as server:
        _, writer = await raw(server)
        writer.write(
            b"".join(frame({"uri": "/good", "verb": "POST"}, i, f"m{i}") for i in range(300))
        )
        await writer.drain()
        got = await server.good.wait_for(300)  # type: ignore[attr-defined]
        assert [m.payload for m in got] == list(range(300))
        writer.close()


async def test_one_frame_written_byte_by_byte_is_one_message_with_a_reply(
    factory: distro.Factory,
) -> None:
    async with serving(factory) as server:
        reader, writer = await raw(server)
        data = frame({"uri": "/echo/bytewise", "replyTo": "anything"}, id="b1")
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert reply["headers"]["inReplyTo"] == "b1"
        assert reply["payload"] == "bytewise"
        writer.close()
    assert server.stats.received == 1
    assert server.stats.dropped == {}


async def test_frames_cut_differently_on_several_connections_at_once_stay_apart(
    factory: distro.Factory,
) -> None:
    # A server's connections read into one shared buffer, in turns: each connection's partial
    # frame must be its own, whatever the others read in between.
    async with serving(factory) as server, polling() as polled:
        conns = [await raw(server) for _ in range(4)]
        streams = [
            b"".join(
                frame({"uri": f"/echo/c{c}m{i}", "replyTo": "x"}, id=f"{c}-{i}") for i in range(3)
            )
            for c in range(len(conns))
        ]
        steps = [5, 7, 11, 64]
        for turn in range(max(len(s) // step + 1 for s, step in zip(streams, steps, strict=True))):
            for (_, writer), stream, step in zip(conns, streams, steps, strict=True):
                if piece := stream[turn * step : (turn + 1) * step]:
                    writer.write(piece)
            await polled()
        for c, (reader, writer) in enumerate(conns):
            for i in range(3):
                reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
                assert (reply["headers"]["inReplyTo"], reply["payload"]) == (
                    f"{c}-{i}",
                    f"c{c}m{i}",
                )
            writer.close()
    assert server.stats.received == 12
    assert server.stats.dropped == {}


async def test_a_client_takes_replies_cut_across_reads(factory: distro.Factory) -> None:
    requests: asyncio.Queue[tuple[dict[str, Any], asyncio.StreamWriter]] = asyncio.Queue()

    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            await requests.put((json.loads(line), writer))
        writer.close()

    def reply(request: dict[str, Any]) -> bytes:
        headers = {"uri": "REPLY", "inReplyTo": request["id"]}
        return frame(headers, request["headers"]["uri"], id="re-" + request["id"])

    fake = await asyncio.start_server(fake_server, "127.0.0.1", 0)
    port = fake.sockets[0].getsockname()[1]
    async with fake, polling() as polled, factory.client(port=port) as client:
        # One reply in pieces of 9 bytes, each read on its own.
        first = asyncio.ensure_future(client.request(distro.message({"uri": "/one"}), 5))
        request, writer = await asyncio.wait_for(requests.get(), 5)
        data = reply(request)
        for start in range(0, len(data), 9):
            writer.write(data[start : start + 9])
            await polled()
        assert (await first).payload == "/one"
        # Two replies, read as the first and the start of the second, then the rest.
        pending = [
            asyncio.ensure_future(client.request(distro.message({"uri": f"/{n}"}), 5))
            for n in ("two", "three")
        ]
        got = [await asyncio.wait_for(requests.get(), 5) for _ in pending]
        data = b"".join(reply(request) for request, _ in got)
        cut = len(reply(got[0][0])) + 10
        writer.write(data[:cut])
        await polled()
        writer.write(data[cut:])
        assert [(await p).payload for p in pending] == ["/two", "/three"]


async def test_frames_longer_than_one_read_cross_both_ways_whole(factory: distro.Factory) -> None:
    server = factory.server(port=0)
    server.get("/echo", lambda m: m.payload)
    async with server, factory.client(port=server.address[1]) as client:
        sizes = [70_000, 300_000, 1_000_000, *range(1, 20)]
        payloads = [",".join(map(str, range(size)))[:size] for size in sizes]  # not periodic
        replies = await asyncio.gather(
            *(client.request(distro.message({"uri": "/echo"}, p), timeout=10) for p in payloads)
        )
    assert [r.payload for r in replies] == payloads


async def test_reads_allocate_for_what_arrived_not_for_the_most_a_read_could_take(
    factory: distro.Factory,
) -> None:
    # Reading with plain recv(n) allocates n (asyncio's 256 KiB) for every read, however few
    # bytes came; a request and its reply are one small read on each side.
    async with serving(factory) as server, factory.client(port=server.address[1]) as client:
        await client.request(distro.message({"uri": "/echo/warm"}), timeout=5)
        tracemalloc.start()
        try:
            for i in range(50):
                reply = await client.request(distro.message({"uri": f"/echo/w{i}"}), timeout=5)
                assert reply.payload == f"w{i}"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 128 * 1024, f"peak traced memory {peak} bytes"


# -- addresses -------------------------------------------------------------------------------


async def test_address_in_use_names_the_address_and_port(factory: distro.Factory) -> None:
    async with serving(factory) as first:
        host, port = first.address
        second = factory.server(port=port)
        with pytest.raises(distro.AddressInUse) as info:
            await second.start()
    assert str(port) in str(info.value) and host in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


async def test_the_address_defaults_to_loopback(factory: distro.Factory) -> None:
    async with serving(factory) as server:
        assert server.address[0] == "127.0.0.1"
        async with factory.client(port=server.address[1]) as client:  # client default too
            reply = await client.request(distro.message({"uri": "/echo/lo"}), timeout=5)
    assert reply.payload == "lo"


@pytest.mark.skipif(not _ipv6_loopback_usable(), reason="no IPv6 loopback on this machine")
async def test_ipv6_loopback_with_request_and_received(factory: distro.Factory) -> None:
    origin = factory.server(address="::1", port=0)
    acks = Recorder()
    origin.receive(acks)
    async with origin, serving(factory, address="::1") as server:
        assert server.address[0] == "::1"
        async with factory.client(address="::1", port=server.address[1]) as client:
            reply = await client.request(distro.message({"uri": "/echo/six"}), timeout=5)
            sent = distro.message(
                {"uri": "/good", "verb": "POST", "address": "::1", "port": origin.address[1]}
            )
            await client.send(sent)
            [ack] = await acks.wait_for(1)  # sent to the sender's own host, so allowed
    assert reply.payload == "six"
    assert ack.payload == {"msgId": sent.id}


async def test_a_client_to_a_port_nobody_listens_on_gets_connection_error(
    factory: distro.Factory,
) -> None:
    client = factory.client(port=_free_port(), connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(distro.ConnectionError) as info:
        await client.open()
    # open() keeps trying for connect_timeout (the server may be starting), then says so.
    assert 0.45 < time.monotonic() - started < 2
    assert "127.0.0.1" in str(info.value) and "refused for 0.5s" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


async def test_a_client_opened_before_its_server_connects_once_the_server_is_up(
    factory: distro.Factory,
) -> None:
    port = _free_port()
    client = factory.client(port=port, connect_timeout=5)
    opening = asyncio.ensure_future(client.open())
    await asyncio.sleep(0.3)  # the server starts a moment after the client
    assert not opening.done()
    server = factory.server(port=port)
    server.get("/up", lambda msg: "yes")
    async with server:
        await asyncio.wait_for(opening, 5)
        reply = await client.request(distro.message({"uri": "/up"}), timeout=5)
        assert reply.payload == "yes"
        await client.aclose()


async def test_connect_timeout_bounds_a_connect_that_gets_no_answer(
    factory: distro.Factory,
) -> None:
    # A listening socket whose accept queue is full drops new SYNs: the connect just hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(full.getsockname())
                fillers.append(filler)
            client = factory.client(port=full.getsockname()[1], connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(distro.ConnectionError) as info:
                await client.open()
            assert time.monotonic() - started < 2
            if "within" not in str(info.value):
                pytest.skip("this kernel refuses connections to a full accept queue")
            assert "within 0.3s" in str(info.value)
        finally:
            for filler in fillers:
                filler.close()


# -- reconnection ----------------------------------------------------------------------------


async def test_a_lost_server_fails_pending_requests_at_once_then_send_reconnects(
    factory: distro.Factory,
) -> None:
    """Exactly what happens: the server goes away -> the pending request fails with
    ConnectionError at once; a send while nobody listens -> ConnectionError (the reconnect is
    refused); the server is back on the same port -> the next send reconnects and arrives."""
    first = factory.server(port=0, close_timeout=0.1)
    hanging = asyncio.Event()

    @first.get("/hang")
    async def hang(msg: distro.Message) -> None:
        hanging.set()
        await asyncio.Event().wait()

    await first.start()
    port = first.address[1]
    async with factory.client(port=port) as client:
        pending = asyncio.ensure_future(client.request(distro.message({"uri": "/hang"}), 30))
        await asyncio.wait_for(hanging.wait(), 5)
        started = time.monotonic()
        await first.aclose()
        with pytest.raises(distro.ConnectionError):
            await asyncio.wait_for(pending, 5)
        assert time.monotonic() - started < 3

        with pytest.raises(distro.ConnectionError, match=str(port)):
            await client.send(distro.message({"uri": "/good", "verb": "POST"}, "nobody"))

        async with serving(factory, port=port) as second:
            await client.send(distro.message({"uri": "/good", "verb": "POST"}, "back"))
            [msg] = await second.good.wait_for(1)  # type: ignore[attr-defined]
            reply = await client.request(distro.message({"uri": "/echo/again"}), timeout=5)
    assert msg.payload == "back"
    assert reply.payload == "again"


async def test_a_client_works_again_after_the_server_restarts(factory: distro.Factory) -> None:
    """Without a request pending, the client may not have seen the old connection close when
    it next sends; that first request then fails at once with ConnectionError (the old
    connection is reset), never silently by time-out, and the one after it reconnects."""
    async with serving(factory) as first:
        port = first.address[1]
        client = factory.client(port=port)
        await client.open()
        assert (await client.request(distro.message({"uri": "/echo/one"}), 5)).payload == "one"
    try:
        async with serving(factory, port=port):
            for attempt in range(2):
                try:
                    reply = await client.request(distro.message({"uri": "/echo/two"}), 5)
                    break
                except distro.ConnectionError:
                    assert attempt == 0
            assert reply.payload == "two"
    finally:
        await client.aclose()


# -- back-pressure and limits ----------------------------------------------------------------


async def test_client_send_waits_for_the_socket_when_the_server_is_not_reading(
    factory: distro.Factory,
) -> None:
    server = factory.server(port=0, max_concurrency=1, close_timeout=0.1)
    release = asyncio.Event()
    got = Recorder()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        await release.wait()
        got(msg)

    payload = "p" * 250_000
    async with server, factory.client(port=server.address[1]) as client:

        async def flood() -> None:
            for i in range(200):  # 50 MB: far more than socket buffers hold
                await client.send(distro.message({"uri": "/slow", "verb": "POST"}, [i, payload]))

        flooding = asyncio.ensure_future(flood())
        done, _ = await asyncio.wait({flooding}, timeout=1.0)
        assert not done, "send() buffered 50 MB instead of waiting for the socket"
        release.set()
        await asyncio.wait_for(flooding, 20)
        messages = await got.wait_for(200, timeout=20)
    assert [m.payload[0] for m in messages] == list(range(200))


async def test_back_pressure_holds_frames_on_every_connection_new_ones_too(
    factory: distro.Factory,
) -> None:
    # One handler at a time and a backlog of four: the rest must wait in the sockets (reading
    # paused), not be dropped as overload, including on connections opened while paused.
    server = factory.server(port=0, max_concurrency=1)
    release = asyncio.Event()
    got = Recorder()

    @server.post("/job")
    async def job(msg: distro.Message) -> None:
        await release.wait()
        got(msg)

    async with server:
        writers = []
        for conn in range(3):
            _, writer = await raw(server)
            batch = (
                frame({"uri": "/job", "verb": "POST"}, [conn, i], f"{conn}-{i}") for i in range(20)
            )
            writer.write(b"".join(batch))
            await writer.drain()
            writers.append(writer)
            if conn == 0:
                await wait_until(lambda: server.stats.received >= 1, what="the first job")
        release.set()
        messages = await got.wait_for(60, timeout=10)
        for writer in writers:
            writer.close()
    assert server.stats.dropped == {}
    for conn in range(3):
        assert [m.payload[1] for m in messages if m.payload[0] == conn] == list(range(20))


async def test_a_client_max_frame_size_sets_its_message_limit(factory: distro.Factory) -> None:
    async with (
        serving(factory) as server,
        factory.client(port=server.address[1], max_frame_size=100) as client,
    ):
        with pytest.raises(distro.MessageTooLarge) as info:
            await client.send(distro.message({"uri": "/good", "verb": "POST"}, "x" * 100))
        assert info.value.limit == 100
    assert factory.transport.capabilities.max_message_size == 1_048_576


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"port": 70000}, ValueError),
        ({"port": "80"}, ValueError),
        ({"address": ""}, ValueError),
        ({"max_frame_size": 0}, ValueError),
        ({"connect_timeout": -1}, ValueError),
        ({"connect_timeout": float("nan")}, ValueError),
        ({"bogus": 1}, TypeError),
    ],
)
def test_bad_options_are_refused(
    factory: distro.Factory, options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        factory.server(**options)


async def test_a_client_without_a_port_is_a_value_error(factory: distro.Factory) -> None:
    with pytest.raises(ValueError, match="port"):
        await factory.client().open()


async def test_clients_on_one_loop_share_a_read_buffer_without_mixing_replies() -> None:
    """Replies larger than one read, to two clients at once, each arrive whole and intact."""
    factory = distro.create("tcp")
    server = factory.server(port=0)
    server.get("/blob/{who}/{n}", lambda m: m.params["who"] * (40_000 + int(m.params["n"])))
    async with server:
        host, port = server.address
        async with (
            factory.client(address=host, port=port) as first,
            factory.client(address=host, port=port) as second,
        ):
            requests = [
                client.request(distro.message({"uri": f"/blob/{who}/{n}"}), timeout=10)
                for n in range(12)
                for who, client in (("a", first), ("b", second))
            ]
            replies = await asyncio.gather(*requests)
    expected = [who * (40_000 + n) for n in range(12) for who in ("a", "b")]
    assert [reply.payload for reply in replies] == expected


# -- limits: no peer exhausts the server (hardening) ------------------------------------------


async def test_connections_past_max_connections_are_closed_and_counted(
    factory: distro.Factory,
) -> None:
    async with serving(factory, max_connections=5) as server:
        links = [await raw(server) for _ in range(8)]
        try:
            await dropped(server, "too_many_connections", 3)
            closed = 0
            for reader, _ in links:
                try:
                    if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                        closed += 1
                except asyncio.TimeoutError:
                    pass  # still open: one of the five served
            assert closed == 3
        finally:
            for _, writer in links:
                writer.close()
        # Once the idle ones go, new connections are served again.
        await wait_until(lambda: len(server._listener.connections) == 0, what="links closed")  # type: ignore[attr-defined]
        await still_serves(factory, server)


async def test_an_idle_connection_is_closed_after_idle_timeout(factory: distro.Factory) -> None:
    async with serving(factory, idle_timeout=0.3) as server:
        reader, writer = await raw(server)
        busy_reader, busy_writer = await raw(server)
        try:
            began = time.monotonic()
            for _ in range(8):  # the busy one keeps talking: it stays
                busy_writer.write(frame({"uri": "/good", "verb": "POST"}))
                await asyncio.sleep(0.1)
            assert await asyncio.wait_for(reader.read(1), 2) == b""
            assert time.monotonic() - began < 2
            await dropped(server, "idle_timeout", 1)
            busy_writer.write(frame({"uri": "/echo/still", "replyTo": "x"}))
            line = await asyncio.wait_for(busy_reader.readline(), 2)
            assert json.loads(line)["payload"] == "still"
        finally:
            writer.close()
            busy_writer.close()


async def test_partial_frames_of_all_peers_are_bounded_in_bytes(factory: distro.Factory) -> None:
    # 300 peers each holding half of a 1 MiB frame cost +313 MiB before the cap.
    async with serving(factory, max_buffered=2 * 1024 * 1024) as server:
        links = [await raw(server) for _ in range(6)]
        try:
            half = b'{"id":"x","headers":{"uri":"/good","verb":"POST"},"payload":"' + b"p" * 600_000
            for _, writer in links:
                writer.write(half)
                await writer.drain()
            await dropped(server, "buffer_limit", 3)  # 3 x 600 kB fit in 2 MiB, the rest not
            listener = server._listener  # type: ignore[attr-defined]
            await wait_until(lambda: listener.buffered <= 2 * 1024 * 1024, what="bounded")
            # The peers that were not cut finish their frames and are served.
            for _, writer in links:
                if not writer.is_closing():
                    writer.write(b'"}\n')
            good = server.good  # type: ignore[attr-defined]
            await good.wait_for(3)
            assert len(good.messages) == 3
            await still_serves(factory, server)
            await wait_until(lambda: listener.buffered == 0, what="nothing held")
        finally:
            for _, writer in links:
                writer.close()


async def test_replies_a_peer_never_reads_are_bounded_and_the_peer_cut(
    factory: distro.Factory,
) -> None:
    # Async handlers' 900 KB replies to a peer that never reads piled up (+219 MiB).
    server = factory.server(port=0, max_write_buffer=2 * 1024 * 1024)

    @server.get("/big")
    async def big(msg: distro.Message) -> str:
        return "b" * 900_000

    server.get("/echo/{word}", lambda m: m.params["word"])

    async with server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        try:
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            sock.sendall(
                b"".join(frame({"uri": "/big", "replyTo": "x"}, id=f"q{i}") for i in range(200))
            )
            await wait_until(lambda: server.stats.dropped.get("reply_failed", 0) >= 1)
            grown = tracemalloc.get_traced_memory()[1] - before
            tracemalloc.stop()
            assert grown < 40 * 1024 * 1024, f"peak +{grown / 2**20:.0f} MiB"
            await still_serves(factory, server)
        finally:
            sock.close()


async def test_graceful_close_counts_every_frame_it_read_but_did_not_handle(
    factory: distro.Factory,
) -> None:
    # 192 of 200 frames already read were dropped without a count when the server closed.
    server = factory.server(port=0, max_concurrency=1, close_timeout=0.5)
    release = asyncio.Event()

    @server.post("/job")
    async def job(msg: distro.Message) -> None:
        await release.wait()

    await server.start()
    try:
        _, writer = await raw(server)
        # ~15 kB in one write: one read takes it all, so every frame is in the server's hands.
        writer.write(
            b"".join(frame({"uri": "/job", "verb": "POST"}, i, f"j{i}") for i in range(200))
        )
        await writer.drain()
        await wait_until(lambda: server.stats.received >= 1, what="the first job")
        closing = asyncio.ensure_future(server.aclose())
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(closing, 5)
        writer.close()
    finally:
        await server.aclose()
    stats = server.stats
    assert stats.handled + stats.dropped_total == 200, stats
