"""zmq-specific behaviour beyond the conformance kit: ipc, IPv6, busy ports, the high-water
mark and the message size limit (absent and late servers: test_zmq_connect.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until


async def test_ipc_endpoint_serves_requests_and_reports_it_as_the_address(
    tmp_path: Path,
) -> None:
    factory = distro.create("zmq")
    endpoint = f"ipc://{tmp_path}/orders.sock"
    server = factory.server(endpoint=endpoint)
    got = Recorder()
    server.post("/note", got)
    server.get("/echo/{w}", lambda m: m.params["w"])
    async with server:
        assert server.address == (endpoint, 0)
        # The reported address works as client options, as a tcp server's does.
        address, port = server.address
        async with factory.client(address=address, port=port) as client:
            await client.send(distro.message({"uri": "/note", "verb": "POST"}, 1))
            reply = await client.request(distro.message({"uri": "/echo/ipc"}), timeout=5)
        async with factory.client(endpoint=endpoint) as client:
            await client.send(distro.message({"uri": "/note", "verb": "POST"}, 2))
            await got.wait_for(2)
    assert reply.payload == "ipc"
    assert got.payloads == [1, 2]
    assert got.messages[0].params == {}


async def test_received_from_an_ipc_client_may_go_to_a_loopback_server(tmp_path: Path) -> None:
    # ipc peers are processes on this machine: their host is loopback for the RECEIVED check.
    factory = distro.create("zmq")
    origin = factory.server()
    acks = Recorder()
    origin.receive(acks)
    target = factory.server(endpoint=f"ipc://{tmp_path}/t.sock")
    target.post("/order", lambda m: None)
    async with origin, target, factory.client(endpoint=target.address[0]) as client:
        host, port = origin.address
        sent = distro.message({"uri": "/order", "verb": "POST", "address": host, "port": port})
        await client.send(sent)
        [ack] = await acks.wait_for(1)
    assert ack.payload == {"msgId": sent.id}
    assert target.stats.acks_sent == 1


async def test_a_second_server_on_a_live_ipc_path_raises_address_in_use(tmp_path: Path) -> None:
    # libzmq alone would unlink the first server's socket file and take the path over.
    factory = distro.create("zmq")
    endpoint = f"ipc://{tmp_path}/taken.sock"
    first = factory.server(endpoint=endpoint)
    first.get("/who", lambda m: "first")
    async with first:
        with pytest.raises(distro.AddressInUse, match=r"taken\.sock"):
            await factory.server(endpoint=endpoint).start()
        async with factory.client(endpoint=endpoint) as client:
            reply = await client.request(distro.message({"uri": "/who"}), timeout=5)
    assert reply.payload == "first"
    # Once the first has closed, the path can be bound again.
    async with factory.server(endpoint=endpoint) as again:
        assert again.address == (endpoint, 0)


async def test_ipc_in_a_missing_directory_is_a_transport_error(tmp_path: Path) -> None:
    server = distro.create("zmq").server(endpoint=f"ipc://{tmp_path}/no/such/dir/s.sock")
    with pytest.raises(distro.TransportError, match="no/such/dir") as info:
        await server.start()
    assert info.value.__cause__ is not None


async def test_an_unknown_interface_is_a_transport_error_not_a_zmq_error() -> None:
    import zmq

    server = distro.create("zmq").server(address="no-such-interface.invalid")
    with pytest.raises(distro.TransportError, match="no-such-interface") as info:
        await server.start()
    assert type(info.value) is distro.TransportError
    assert isinstance(info.value.__cause__, zmq.ZMQError)  # kept as the cause


async def test_ipv6_loopback() -> None:
    factory = distro.create("zmq")
    server = factory.server(address="::1", port=0)
    server.get("/v6", lambda m: "six")
    async with server:
        host, port = server.address
        assert host == "::1" and port > 0
        async with factory.client(address=host, port=port) as client:
            reply = await client.request(distro.message({"uri": "/v6"}), timeout=5)
    assert reply.payload == "six"


async def test_an_ipv4_server_reports_a_plain_ipv4_address_and_sender() -> None:
    factory = distro.create("zmq")
    server = factory.server()
    got = Recorder()
    server.receive(got)
    async with server, factory.client(port=server.address[1]) as client:
        assert server.address[0] == "127.0.0.1"
        # A RECEIVED to the literal sender address passes the core's sender check.
        ack = {"address": "127.0.0.1", "port": server.address[1]}
        await client.send(distro.message({"uri": "/from", "verb": "POST", **ack}))
        await got.wait_for(2)  # the message, then its RECEIVED to this same server
    assert [m.uri for m in got.messages] == ["/from", "RECEIVED"]
    assert server.stats.acks_sent == 1
    assert "ack_refused" not in server.stats.dropped


async def test_a_taken_port_raises_address_in_use_naming_address_and_port() -> None:
    factory = distro.create("zmq")
    async with factory.server(port=0) as first:
        port = first.address[1]
        second = factory.server(port=port)
        with pytest.raises(distro.AddressInUse) as info:
            await second.start()
    assert "127.0.0.1" in str(info.value) and str(port) in str(info.value)
    assert info.value.__cause__ is not None
    assert not second.is_serving


async def test_a_port_held_by_a_plain_socket_raises_address_in_use() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(distro.AddressInUse, match=str(port)):
            await distro.create("zmq").server(port=port).start()


# A burst is held by the client until the end of the loop iteration or FLUSH_AT bytes, then
# handed to ZeroMQ. The stalled server below takes one frame into its queue and then stops
# reading, so the rest fill the loopback TCP buffers (a few MB) and then the client's queue:
# frames of 64 KiB get there within a few hundred sends.
FILLER = "f" * 65536


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """The port of a ZeroMQ ROUTER that accepts connections and never reads a frame."""
    import zmq

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 1)
    router.setsockopt(zmq.LINGER, 0)
    try:
        yield router.bind_to_random_port("tcp://127.0.0.1")
    finally:
        router.close(linger=0)
        context.term()


async def test_sends_to_a_server_that_does_not_read_stop_at_the_high_water_mark(
    stalled_port: int,
) -> None:
    client = distro.create("zmq").client(port=stalled_port, hwm=4, send_timeout=0.2)
    sent = 0
    async with client:
        started = time.monotonic()
        with pytest.raises(distro.ConnectionError, match="high-water mark"):
            for _ in range(1000):
                await client.send(distro.message({"uri": "/void", "verb": "POST"}, FILLER))
                sent += 1
        assert time.monotonic() - started < 5
    assert 1 <= sent < 1000


async def test_frames_held_at_the_high_water_mark_are_reported_when_closing(
    stalled_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The frames of one loop iteration are written at its end (or past FLUSH_AT bytes); at the
    # high-water mark the rest wait for room. Closing does not wait: what is still held is
    # discarded, and logged.
    client = distro.create("zmq").client(port=stalled_port, hwm=2, send_timeout=0.1, linger=0)
    with caplog.at_level(logging.WARNING, logger="distro.zmq"):
        async with client:
            with pytest.raises(distro.ConnectionError, match="high-water mark"):
                for _ in range(1000):
                    await client.send(distro.message({"uri": "/void", "verb": "POST"}, FILLER))
            started = time.monotonic()
        assert time.monotonic() - started < 1
    assert "discarded on close" in caplog.text


async def test_a_burst_longer_than_the_send_batch_arrives_whole_and_in_order() -> None:
    # No send in the burst suspends until ZeroMQ's queues are full, so the server reads nothing
    # until then: the client holds frames for the end of the iteration, hands them to ZeroMQ
    # past FLUSH_AT bytes, keeps those it refuses at the high-water mark, in order, and waits
    # for room before taking more.
    factory = distro.create("zmq")
    server = factory.server(hwm=100)
    got = Recorder()
    server.post("/burst", got)
    count = 1500
    async with server, factory.client(port=server.address[1], hwm=100) as client:
        for i in range(count):
            await client.send(distro.message({"uri": "/burst", "verb": "POST"}, i))
        request = distro.message({"uri": "/burst", "verb": "POST"}, "last")
        await client.request(request, timeout=5)
        await got.wait_for(count + 1, timeout=10)
    assert got.payloads == [*range(count), "last"]


async def test_max_message_size_option_bounds_both_ends() -> None:
    factory = distro.create("zmq")
    server = factory.server(max_message_size=2000)
    got = Recorder()
    server.post("/m", got)
    async with server:
        _, port = server.address
        async with factory.client(port=port, max_message_size=2000) as client:
            with pytest.raises(distro.MessageTooLarge, match="2000"):
                await client.send(distro.message({"uri": "/m", "verb": "POST"}, "x" * 2000))
        # A client that allows more than the server: ZeroMQ drops its connection on the
        # oversized frame, and the server serves the next client as before.
        async with factory.client(port=port) as careless:
            await careless.send(distro.message({"uri": "/m", "verb": "POST"}, "y" * 5000))
        async with factory.client(port=port) as client:
            await client.send(distro.message({"uri": "/m", "verb": "POST"}, "fits"))
            [msg] = await got.wait_for(1)
    assert msg.payload == "fits"
    assert server.stats.received == 1


async def test_a_shared_zmq_context_can_be_passed_in() -> None:
    import zmq

    context = zmq.Context()
    try:
        factory = distro.create("zmq")
        server = factory.server(context=context)
        server.get("/ctx", lambda m: "own")
        async with server, factory.client(port=server.address[1], context=context) as client:
            reply = await client.request(distro.message({"uri": "/ctx"}), timeout=5)
        assert reply.payload == "own"
    finally:
        context.term()


async def test_many_concurrent_clients() -> None:
    factory = distro.create("zmq")
    server = factory.server()
    server.get("/who/{n}", lambda m: int(m.params["n"]))
    async with server:
        port = server.address[1]

        async def one(n: int) -> object:
            async with factory.client(port=port) as client:
                reply = await client.request(distro.message({"uri": f"/who/{n}"}), timeout=5)
                return reply.payload

        answers = await asyncio.gather(*(one(n) for n in range(20)))
    assert answers == list(range(20))


async def test_a_slow_server_holds_the_sender_back_and_loses_nothing() -> None:
    factory = distro.create("zmq")
    server = factory.server(max_concurrency=1, hwm=10)
    gate = asyncio.Event()
    got = Recorder()

    @server.post("/load")
    async def load(msg: distro.Message) -> None:
        await gate.wait()
        got(msg)

    count = 2000
    filler = "f" * 10_000  # 20 MB in all: more than ZeroMQ and loopback TCP buffer together
    async with server, factory.client(port=server.address[1], hwm=10, send_timeout=10) as client:

        async def flood() -> None:
            for i in range(count):
                await client.send(distro.message({"uri": "/load", "verb": "POST"}, [i, filler]))

        sender = asyncio.ensure_future(flood())
        done, _ = await asyncio.wait({sender}, timeout=0.5)
        assert not done, "the sender should be held at the high-water mark"
        gate.set()
        await asyncio.wait_for(sender, 20)
        await got.wait_for(count, timeout=20)
    assert [p[0] for p in got.payloads] == list(range(count))  # type: ignore[index]
    assert server.stats.dropped_total == 0


async def test_a_terminated_context_fails_waiting_requests_and_stops_the_server() -> None:
    import zmq

    context = zmq.Context()
    factory = distro.create("zmq")
    server = factory.server(context=context)
    gate = asyncio.Event()

    @server.get("/wait")
    async def wait(msg: distro.Message) -> str:
        await gate.wait()
        return "never"

    server.get("/ping", lambda m: "pong")
    await server.start()
    client = factory.client(port=server.address[1], context=context)
    await client.open()
    try:
        assert (await client.request(distro.message({"uri": "/ping"}), timeout=5)).payload
        pending = asyncio.ensure_future(client.request(distro.message({"uri": "/wait"}), 10))
        await wait_until(lambda: server.stats.received == 2, what="the request to arrive")
        # term() blocks until every socket is closed, so it runs in a thread meanwhile.
        terminating = asyncio.ensure_future(asyncio.to_thread(context.term))
        with pytest.raises(distro.ConnectionError) as info:
            await asyncio.wait_for(pending, 5)
        assert isinstance(info.value.__cause__, distro.TransportError)
        # The failed socket is refused at once, naming what broke it; never a zmq error.
        with pytest.raises(distro.ConnectionError, match="closed") as info:
            await client.send(distro.message({"uri": "/ping", "verb": "POST"}))
        assert isinstance(info.value.__cause__, distro.TransportError)
        await wait_until(
            lambda: server.stats.dropped.get("socket_failed") == 1, what="the failure counted"
        )
    finally:
        gate.set()
        await client.aclose()
        await server.aclose()
    await asyncio.wait_for(terminating, 5)
