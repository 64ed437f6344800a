"""Signed messages (distro_core.middleware.Signing; docs/wire-format.md, "Signed messages"):
the test vectors, checked against the implementation and against a reference written here with
the standard library only; and signing between real servers and clients."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

import distro_core as distro
from distro_core.middleware import Incoming, Refuse, Signing
from distro_core.testing import wait_until

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "signing" / "signing.json").read_text("utf-8")
)
KEYS = {"k1": b"0123456789abcdef-one", "k2": b"0123456789abcdef-two"}
POST = {"uri": "/orders", "verb": "POST"}


def _receiver(at: float) -> Signing:
    return Signing(
        VECTORS["keys"],
        VECTORS["signing_key"],
        window=VECTORS["window"],
        max_skew=VECTORS["max_skew"],
        clock=lambda: at,
    )


def _verify(signing: Signing, frame: str) -> str | None:
    msg = distro.parse(frame)
    try:
        signing.received(Incoming(msg, frame.encode()))
    except Refuse as exc:
        return exc.reason
    return None


def test_signing_the_vector_gives_its_bytes_exactly() -> None:
    signer = _receiver(VECTORS["now"])
    assert signer.outgoing(VECTORS["unsigned"].encode()).decode() == VECTORS["signed"]


def test_the_vector_against_a_reference_with_the_standard_library() -> None:
    """HMAC-SHA256 over the documented input, computed without distro's codec."""
    obj = json.loads(VECTORS["signed"])
    headers = {k: v for k, v in obj["headers"].items() if k != "sig"}

    def enc(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    data = b"distro-sig-v1\n" + enc(obj["id"]) + b"\n" + enc(headers) + b"\n" + enc(obj["payload"])
    assert data.decode() == VECTORS["mac_input"]
    key = VECTORS["keys"][headers["sigKey"]].encode()
    digest = hmac.new(key, data, hashlib.sha256).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == obj["headers"]["sig"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vector_cases(case: dict[str, Any]) -> None:
    assert _verify(_receiver(case["verify_at"]), case["frame"]) == case["expect"]


def test_a_second_delivery_is_replayed_and_a_confirmed_repeat_is_not() -> None:
    receiver = _receiver(VECTORS["now"])
    assert _verify(receiver, VECTORS["signed"]) is None
    assert _verify(receiver, VECTORS["signed"]) == "replayed"
    signer = _receiver(VECTORS["now"])
    confirmed = distro.message({**POST, "replyTo": "x", "confirm": True}, 1)
    frame = signer.outgoing(confirmed.to_bytes()).decode()
    assert _verify(receiver, frame) is None
    assert _verify(receiver, frame) is None  # the server's confirm window answers it


def test_ids_are_forgotten_after_the_window_and_memory_is_bounded() -> None:
    now = [1000.0]
    signer = Signing(KEYS, "k1", clock=lambda: now[0])
    receiver = Signing(KEYS, "k1", window=10, max_skew=1, max_remembered=3, clock=lambda: now[0])
    frames = [signer.outgoing(distro.message(POST, i).to_bytes()).decode() for i in range(4)]
    assert [_verify(receiver, f) for f in frames] == [None, None, None, "replay_window_full"]
    now[0] += 12  # past window + skew: the remembered ids expire (and the frames are stale)
    fresh = signer.outgoing(distro.message(POST, 9).to_bytes()).decode()
    assert _verify(receiver, fresh) is None
    assert len(receiver._seen) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        Signing({"k": b"short"}, "k")
    with pytest.raises(ValueError, match="not one of the keys"):
        Signing(KEYS, "k3")
    with pytest.raises(TypeError):
        Signing({"k": 1234567890123456789}, "k")  # type: ignore[dict-item]


@pytest.mark.parametrize("transport", ["tcp", "udp4"])
async def test_signed_requests_replies_and_refusals(transport: str) -> None:
    factory = distro.create(transport)
    server = factory.server(port=0, middleware=[Signing(KEYS, "k2")])  # signs with the new key
    calls: list[Any] = []
    server.post("/orders", lambda msg: calls.append(msg.headers) or msg.payload + 1)
    async with server:
        where = {"address": server.address[0], "port": server.address[1]}
        async with (
            factory.client(where, middleware=[Signing(KEYS, "k1")]) as signed,
            factory.client(where) as unsigned,
            factory.client(
                where, middleware=[Signing({"k9": b"0123456789abcdef-ni"}, "k9")]
            ) as other,
        ):
            assert (await signed.request(distro.message(POST, 1))).payload == 2
            await signed.send(distro.message(POST, 5), confirm=True)
            for client in (unsigned, other):
                with pytest.raises(distro.RequestTimeout):  # no reply, nothing leaks
                    await client.request(distro.message(POST, 3), timeout=0.3)
    assert len(calls) == 2
    assert not any(name.startswith("sig") for name in calls[0])  # handlers see no signature
    assert server.stats.dropped == {"unsigned": 1, "unknown_key": 1}
    assert server.stats.replies_sent == 2


async def test_a_captured_frame_replayed_is_refused() -> None:
    factory = distro.create("tcp")
    server = factory.server(port=0, middleware=[Signing(KEYS, "k1")])
    calls: list[Any] = []
    server.post("/orders", lambda msg: calls.append(msg.payload))
    captured: list[bytes] = []

    class Tap(Signing):
        def outgoing(self, frame: bytes) -> bytes:
            signed = super().outgoing(frame)
            captured.append(signed)
            return signed

    async with server:
        where = {"address": server.address[0], "port": server.address[1]}
        async with factory.client(where, middleware=[Tap(KEYS, "k1")]) as client:
            await client.send(distro.message(POST, 1))
            await wait_until(lambda: calls == [1], what="the first delivery")
            conn = client._conn
            assert conn is not None
            await conn.send(captured[0], distro.parse(captured[0]))  # the same bytes again
            await wait_until(lambda: server.stats.received == 2, what="the replay")
    assert calls == [1]
    assert server.stats.dropped == {"replayed": 1}


async def test_a_client_refuses_an_unsigned_reply() -> None:
    factory = distro.create("memory")
    server = factory.server(port=0)  # signs nothing
    server.post("/orders", lambda msg: "hello")
    async with server:
        c = factory.client(port=server.address[1], middleware=[Signing(KEYS, "k1")])
        async with c:
            with pytest.raises(distro.RequestTimeout):
                await c.request(distro.message(POST), timeout=0.3)
    assert c.stats.refused == {"unsigned": 1}


async def test_received_acknowledgements_are_signed() -> None:
    factory = distro.create("udp4")
    origin = factory.server(port=0, middleware=[Signing(KEYS, "k1")])
    target = factory.server(port=0, middleware=[Signing(KEYS, "k1")])
    acks: list[Any] = []
    origin.receive(lambda msg: acks.append(msg) if msg.uri == "RECEIVED" else None)
    target.post("/orders", lambda msg: None)
    async with origin, target:
        where = {"address": target.address[0], "port": target.address[1]}
        async with factory.client(where, middleware=[Signing(KEYS, "k1")]) as client:
            headers = {**POST, "address": "127.0.0.1", "port": origin.address[1]}
            sent = distro.message(headers, 1)
            await client.send(sent)
            await wait_until(lambda: acks, what="the RECEIVED")
    assert acks[0].payload == {"msgId": sent.id}
    assert not origin.stats.dropped and target.stats.acks_sent == 1


async def test_confirmed_sends_over_udp_survive_retransmission() -> None:
    """A confirmed send re-sent (the same frame) reaches the server's confirm window."""
    factory = distro.create("udp4")
    server = factory.server(port=0, middleware=[Signing(KEYS, "k1")])
    calls: list[Any] = []
    gate = [0]

    async def slow(msg: distro.Message) -> None:
        gate[0] += 1
        calls.append(msg.payload)
        await wait_until(lambda: server.stats.repeats >= 1, timeout=5, what="a repeat")

    server.post("/orders", slow)
    async with server:
        where = {"address": server.address[0], "port": server.address[1]}
        async with factory.client(where, middleware=[Signing(KEYS, "k1")]) as client:
            await client.send(distro.message(POST, 7), confirm=True, timeout=5)
    assert calls == [7]
    assert server.stats.repeats >= 1 and "replayed" not in server.stats.dropped


async def test_a_frame_over_the_limit_once_signed_is_too_large() -> None:
    factory = distro.create("udp4")
    limit = factory.transport.capabilities.max_message_size
    assert limit is not None
    server = factory.server(port=0, middleware=[Signing(KEYS, "k1")])
    async with server:
        where = {"address": server.address[0], "port": server.address[1]}
        async with factory.client(where, middleware=[Signing(KEYS, "k1")]) as client:
            bare = len(distro.message(POST, "").to_bytes())
            msg = distro.message(POST, "x" * (limit - bare - 20))  # fits unsigned, not signed
            assert len(msg.to_bytes()) <= limit
            with pytest.raises(distro.MessageTooLarge):
                await client.send(msg)


async def test_signing_over_several_servers() -> None:
    factory = distro.create("tcp")
    servers = [factory.server(port=0, middleware=[Signing(KEYS, "k1")]) for _ in range(2)]
    for server in servers:
        server.post("/orders", lambda msg: "ok")
    async with servers[0], servers[1]:
        where = [s.address for s in servers]
        async with factory.client(servers=where, middleware=[Signing(KEYS, "k1")]) as client:
            for i in range(4):
                await client.send(distro.message(POST, i))
                assert (await client.request(distro.message(POST, i))).payload == "ok"
            await wait_until(lambda: sum(s.stats.handled for s in servers) == 8, what="all")
    assert all(s.stats.handled and not s.stats.dropped for s in servers)
