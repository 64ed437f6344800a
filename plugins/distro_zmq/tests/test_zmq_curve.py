"""CURVE on the zmq transport: encrypted round trips, the client's key as the handler's
``msg.peer_identity``, a client with the wrong server key or a key the server does not let in,
ZAP handlers shared and stopped, the options' checks; and the conformance kit over CURVE."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import zmq

import distro_core as distro
from distro_core.testing import Recorder, TransportSuite, wait_until

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")

ZMQ = distro.create("zmq")
SERVER_PUBLIC, SERVER_SECRET = zmq.curve_keypair()
CLIENT_PUBLIC, CLIENT_SECRET = zmq.curve_keypair()


def who() -> distro.Message:
    return distro.message({"uri": "/who", "verb": "POST"})


def curve_server(**options: Any) -> distro.Server:
    server = ZMQ.server({"port": 0, "curve_secret_key": SERVER_SECRET, **options})
    server.post("/who", lambda msg: msg.peer_identity)
    return server


async def test_encrypted_round_trip_with_the_client_key_as_identity() -> None:
    server = curve_server()
    got = Recorder()
    server.post("/note", got)
    async with server:
        port = server.address[1]
        async with ZMQ.client(
            port=port, curve_server_key=SERVER_PUBLIC, curve_secret_key=CLIENT_SECRET
        ) as client:
            assert (await client.request(who(), timeout=5)).payload == CLIENT_PUBLIC.decode()
            for n in range(200):
                await client.send(distro.message({"uri": "/note", "verb": "POST"}, n))
            await client.send(
                distro.message({"uri": "/note", "verb": "POST"}, "c"), confirm=True, timeout=5
            )
            await got.wait_for(201)
        # no keypair of its own: a fresh one per connection, still encrypted
        async with ZMQ.client(port=port, curve_server_key=SERVER_PUBLIC.decode()) as client:
            identity = (await client.request(who(), timeout=5)).payload
        assert len(identity) == 40 and identity != CLIENT_PUBLIC.decode()
    assert got.payloads == [*range(200), "c"]
    assert server.stats.dropped == {}


async def test_the_traffic_is_encrypted_on_the_wire() -> None:
    # A relay between client and server sees every byte: the payload never shows in clear.
    secret_text = b"the-plain-text-payload-7d1f"
    seen = bytearray()
    server = curve_server()
    server.post("/echo", lambda msg: msg.payload)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", server.address[1])

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                seen.extend(data)
                dst.write(data)
            dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer), return_exceptions=True)

    async with server:
        proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        try:
            async with ZMQ.client(port=port, curve_server_key=SERVER_PUBLIC) as client:
                message = distro.message({"uri": "/echo", "verb": "POST"}, secret_text.decode())
                reply = await client.request(message, timeout=5)
        finally:
            proxy.close()
    assert reply.payload == secret_text.decode()
    assert len(seen) > 2 * len(secret_text)  # both directions went through the relay
    assert secret_text not in seen and b"/echo" not in seen


async def test_a_client_with_the_wrong_server_key_cannot_talk() -> None:
    server = curve_server()
    handled = Recorder()
    server.receive(handled)
    async with server:
        port = server.address[1]
        with pytest.raises(distro.ConnectionError, match="no connection"):
            async with ZMQ.client(port=port, curve_server_key=CLIENT_PUBLIC, connect_timeout=0.5):
                pass
        with pytest.raises(distro.ConnectionError, match="no connection"):  # nor a plain one
            async with ZMQ.client(port=port, connect_timeout=0.5):
                pass
        async with ZMQ.client(port=port, curve_server_key=SERVER_PUBLIC) as client:
            await client.request(who(), timeout=5)  # the server went on
    assert len(handled.payloads) == 1


async def test_a_client_key_the_server_does_not_let_in_is_refused_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    stranger_public, stranger_secret = zmq.curve_keypair()
    server = curve_server(curve_clients=[CLIENT_PUBLIC.decode()])
    async with server:
        port = server.address[1]
        with pytest.raises(distro.ConnectionError, match="refused this client's credentials"):
            async with ZMQ.client(
                port=port, curve_server_key=SERVER_PUBLIC, curve_secret_key=stranger_secret
            ):
                pass
        await wait_until(lambda: server.stats.dropped.get("curve_auth", 0) >= 1, 5)
        async with ZMQ.client(
            port=port, curve_server_key=SERVER_PUBLIC, curve_secret_key=CLIENT_SECRET
        ) as client:
            assert (await client.request(who(), timeout=5)).payload == CLIENT_PUBLIC.decode()
    assert set(server.stats.dropped) == {"curve_auth"}
    assert server.stats.handled == 1
    logged = [r.getMessage() for r in caplog.records if "curve_auth" in r.getMessage()]
    assert logged and stranger_public.decode() in logged[0], logged


async def test_servers_with_their_own_client_lists_share_a_context() -> None:
    other_public, other_secret = zmq.curve_keypair()
    first = curve_server(curve_clients=[CLIENT_PUBLIC])
    second = curve_server(curve_clients=[other_public])
    open_to_all = curve_server()
    async with first, second, open_to_all:

        async def ask(server: distro.Server, secret: bytes) -> Any:
            async with ZMQ.client(
                port=server.address[1],
                curve_server_key=SERVER_PUBLIC,
                curve_secret_key=secret,
                connect_timeout=2,
            ) as client:
                return (await client.request(who(), timeout=5)).payload

        assert await ask(first, CLIENT_SECRET) == CLIENT_PUBLIC.decode()
        assert await ask(second, other_secret) == other_public.decode()
        assert await ask(open_to_all, other_secret) == other_public.decode()
        with pytest.raises(distro.ConnectionError, match="refused"):
            await ask(first, other_secret)
        with pytest.raises(distro.ConnectionError, match="refused"):
            await ask(second, CLIENT_SECRET)


async def test_the_zap_handler_stops_with_the_last_curve_server() -> None:
    context = zmq.Context()
    try:
        server = curve_server(context=context)
        async with (
            server,
            ZMQ.client(
                port=server.address[1], curve_server_key=SERVER_PUBLIC, context=context
            ) as client,
        ):
            assert len((await client.request(who(), timeout=5)).payload) == 40
    finally:
        # term() waits for every socket of the context: it returns only if the ZAP handler's
        # sockets were closed with the server.
        await asyncio.wait_for(asyncio.to_thread(context.term), 5)


async def test_a_curve_server_needs_its_secret_key_and_a_client_the_server_key() -> None:
    server = ZMQ.server(port=0, curve_server_key=SERVER_PUBLIC)
    with pytest.raises(ValueError, match="curve_secret_key"):
        await server.start()
    async with curve_server() as running:
        client = ZMQ.client(port=running.address[1], curve_secret_key=CLIENT_SECRET)
        with pytest.raises(ValueError, match="curve_server_key"):
            await client.open()


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"curve_secret_key": 5}, TypeError, "curve_secret_key"),
        ({"curve_secret_key": "short"}, ValueError, "curve_secret_key"),
        ({"curve_secret_key": "é" * 40}, ValueError, "curve_secret_key"),
        ({"curve_secret_key": "~" * 40}, ValueError, "not Z85"),
        ({"curve_server_key": b"x" * 31}, ValueError, "curve_server_key"),
        (
            {"curve_secret_key": SERVER_SECRET, "curve_clients": CLIENT_PUBLIC},
            TypeError,
            "collection",
        ),
        ({"curve_secret_key": SERVER_SECRET, "curve_clients": []}, ValueError, "no client key"),
        (
            {"curve_secret_key": SERVER_SECRET, "curve_clients": ["bad"]},
            ValueError,
            "curve_clients",
        ),
        ({"curve_clients": [CLIENT_PUBLIC]}, ValueError, "needs 'curve_secret_key'"),
    ],
)
def test_bad_curve_options_are_refused(
    options: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        ZMQ.server(port=0, **options)


def test_keys_as_raw_bytes() -> None:
    raw = zmq.utils.z85.decode(SERVER_SECRET)
    assert len(raw) == 32
    ZMQ.server(port=0, curve_secret_key=raw)  # accepted


class TestZmqOverCurve(TransportSuite):
    """The conformance kit with every server and client on CURVE (any client key let in)."""

    transport = "zmq"

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        # The server's options carry the server key too: a RECEIVED it delivers to another
        # CURVE server goes over CURVE (all servers here share one keypair).
        return {"port": 0, "curve_secret_key": SERVER_SECRET, "curve_server_key": SERVER_PUBLIC}

    def client_options(self, factory: distro.Factory, server: distro.Server) -> dict[str, Any]:
        address, port = server.address
        return {"address": address, "port": port, "curve_server_key": SERVER_PUBLIC}
