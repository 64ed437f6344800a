"""Requests, replies and RECEIVED acknowledgements.

The pure helpers in ``distro_core._protocol`` are tested directly; the wire shapes they promise
(docs/wire-format.md) are then checked end to end: a raw connection sends request bytes to a real
Server over the in-process transport and reads exactly what comes back.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import json_values, messages

import distro_core as distro
from distro_core import _protocol
from distro_core.testing import Recorder, wait_until

REQUEST_ID = "9b2e4c1a-3f6d-4e8b-a1c2-7d5e9f0b3a64"


def request() -> distro.Message:
    return distro.message({"uri": "/customer/7", "verb": "get"}, {"q": 1}, id=REQUEST_ID)


def is_uuid4(text: str) -> bool:
    parsed = uuid.UUID(text)
    return parsed.version == 4 and str(parsed) == text


# -- building ---------------------------------------------------------------------------------


def test_as_request_adds_reply_to_and_keeps_the_rest() -> None:
    msg = request()
    data = _protocol.as_request(msg, "memory:3")
    assert json.loads(data) == {
        "id": REQUEST_ID,
        "headers": {"uri": "/customer/7", "verb": "GET", "replyTo": "memory:3"},
        "payload": {"q": 1},
    }
    assert data.startswith(b'{"id":"' + REQUEST_ID.encode() + b'","headers":{"uri":')
    assert msg.headers == {"uri": "/customer/7", "verb": "GET"}  # the message is untouched
    parsed = distro.parse(data)
    assert parsed.id == msg.id and parsed.payload == msg.payload


def test_as_request_replaces_a_reply_to_already_there() -> None:
    msg = distro.message({"uri": "/a", "replyTo": "old", "x": 1})
    headers = distro.parse(_protocol.as_request(msg, "new")).headers
    assert headers == {"uri": "/a", "replyTo": "new", "x": 1}
    assert list(headers) == ["uri", "replyTo", "x"]


@given(messages())
def test_as_request_of_any_message_parses_back(msg: distro.Message) -> None:
    parsed = distro.parse(_protocol.as_request(msg, "somewhere"))
    assert parsed.id == msg.id
    assert parsed.headers == {**msg.headers, "replyTo": "somewhere"}
    assert parsed.payload == msg.payload


@given(json_values)
def test_a_reply_carries_the_payload_and_points_at_the_request(payload: Any) -> None:
    reply = distro.parse(_protocol.reply(request(), payload))
    assert reply.headers == {"uri": "REPLY", "inReplyTo": REQUEST_ID}
    assert reply.payload == payload
    assert reply.id != REQUEST_ID and is_uuid4(reply.id)


@pytest.mark.parametrize("payload", [object(), float("nan"), {1: 2}, (1, 2), {"s": "\ud800"}])
def test_a_reply_payload_that_is_not_json_is_a_message_error(payload: Any) -> None:
    with pytest.raises(distro.MessageError, match="payload"):
        _protocol.reply(request(), payload)


def test_an_error_reply_has_the_error_text_and_a_null_payload() -> None:
    data = _protocol.error_reply(request(), "KeyError: 'x'")
    decoded = json.loads(data)
    assert list(decoded) == ["id", "headers", "payload"]
    assert decoded["headers"] == {"uri": "REPLY", "inReplyTo": REQUEST_ID, "error": "KeyError: 'x'"}
    assert decoded["payload"] is None
    assert is_uuid4(decoded["id"])
    assert distro.parse(data).headers == decoded["headers"]


def test_an_error_text_utf8_cannot_carry_is_escaped_not_a_crash() -> None:
    text = "bad name b'\\xff' decoded as \udcff, and é"
    reply = distro.parse(_protocol.error_reply(request(), text))
    assert reply.headers["error"] == "bad name b'\\xff' decoded as \\udcff, and é"


def test_received_is_the_javascript_originals_acknowledgement() -> None:
    ack = _protocol.received(REQUEST_ID)
    assert ack.headers == {"uri": "RECEIVED"}
    assert ack.payload == {"msgId": REQUEST_ID}
    assert is_uuid4(ack.id)
    assert ack.to_string() == (
        '{"id":"' + ack.id + '","headers":{"uri":"RECEIVED"},"payload":{"msgId":"'
        f'{REQUEST_ID}"}}}}'
    )


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        ({"uri": "/a", "address": "127.0.0.1", "port": 4000}, ("127.0.0.1", 4000)),
        ({"uri": "/a", "port": 4000, "address": "::1"}, ("::1", 4000)),
        ({"uri": "/a", "port": 4000}, None),
        ({"uri": "/a", "address": "127.0.0.1"}, None),
        ({"uri": "/a"}, None),
    ],
)
def test_ack_target_needs_both_address_and_port(
    headers: dict[str, Any], target: tuple[str, int] | None
) -> None:
    assert _protocol.ack_target(distro.message(headers)) == target


# -- reading replies --------------------------------------------------------------------------


def test_reply_outcome_of_a_reply_is_the_request_id_and_payload() -> None:
    reply = distro.parse(_protocol.reply(request(), [1, "two"]))
    assert _protocol.reply_outcome(reply) == (REQUEST_ID, [1, "two"], None)


def test_reply_outcome_of_an_error_reply_is_a_remote_error() -> None:
    reply = distro.parse(_protocol.error_reply(request(), "ValueError: boom"))
    request_id, payload, error = _protocol.reply_outcome(reply)  # type: ignore[misc]
    assert request_id == REQUEST_ID and payload is None
    assert isinstance(error, distro.RemoteError)
    assert error.message_id == REQUEST_ID and error.remote == "ValueError: boom"
    assert REQUEST_ID in str(error) and "ValueError: boom" in str(error)


@pytest.mark.parametrize("uri", ["/customer/7", "RECEIVED", "reply", "REPLY/x"])
def test_reply_outcome_of_anything_but_a_reply_is_none(uri: str) -> None:
    assert _protocol.reply_outcome(distro.message({"uri": uri, "inReplyTo": "x"})) is None


@pytest.mark.parametrize("in_reply_to", [None, 7, ["x"]])
def test_a_reply_without_a_string_in_reply_to_is_a_message_error(in_reply_to: Any) -> None:
    headers: dict[str, Any] = {"uri": "REPLY"}
    if in_reply_to is not None:
        headers["inReplyTo"] = in_reply_to
    with pytest.raises(distro.MessageError, match="inReplyTo"):
        _protocol.reply_outcome(distro.message(headers))


def test_pending_requests() -> None:
    pending: _protocol.Pending[str] = _protocol.Pending()
    assert len(pending) == 0
    pending.add("a", "waiter-a")
    pending.add("b", "waiter-b")
    assert len(pending) == 2
    with pytest.raises(distro.MessageError, match="already waiting"):
        pending.add("a", "another")
    assert pending.pop("a") == "waiter-a"
    assert pending.pop("a") is None
    assert pending.pop("never") is None
    pending.add("a", "waiter-a2")  # an id may wait again once its reply came
    pending.add("c", "waiter-c")
    assert pending.drain() == ["waiter-b", "waiter-a2", "waiter-c"]
    assert len(pending) == 0
    assert pending.drain() == []


# -- on the wire, end to end ------------------------------------------------------------------


class RawReceiver:
    """A ClientReceiver that keeps the frames that come back, exactly as they came."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lost: list[BaseException | None] = []

    def frame_received(self, data: bytes) -> None:
        self.frames.append(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


async def test_a_server_answers_raw_requests_in_the_documented_shapes() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    server = factory.server(port=0, network=network)

    @server.get("/customer/{id}")
    def read(msg: distro.Message) -> Any:
        return {"id": msg.params["id"], "total": 12}

    @server.post("/customer/{id}")
    def fail(msg: distro.Message) -> None:
        raise ValueError("boom")

    receiver = RawReceiver()
    async with server:
        transport = factory.transport.from_options({"port": server.address[1], "network": network})
        link = await transport.connect(receiver)
        sent = [
            distro.message({"uri": "/customer/7", "verb": "GET"}),
            distro.message({"uri": "/customer/7", "verb": "POST"}),
            distro.message({"uri": "/nowhere"}),
        ]
        try:
            for msg in sent:
                await link.send(_protocol.as_request(msg, link.reply_to), msg)
            await wait_until(lambda: len(receiver.frames) == 3, what="three replies")
        finally:
            await link.aclose()
    replies = {}
    for frame in receiver.frames:
        decoded = json.loads(frame)
        assert list(decoded) == ["id", "headers", "payload"]
        assert is_uuid4(decoded["id"])
        assert frame == distro.parse(frame).to_bytes()  # canonical bytes
        replies[decoded["headers"]["inReplyTo"]] = decoded
    ok, failed, unrouted = (replies[msg.id] for msg in sent)
    assert ok["headers"] == {"uri": "REPLY", "inReplyTo": sent[0].id}
    assert ok["payload"] == {"id": "7", "total": 12}
    assert failed["headers"] == {
        "uri": "REPLY",
        "inReplyTo": sent[1].id,
        "error": f"internal error (message {sent[1].id})",  # "ValueError: boom" stays in the log
        "code": "handler_error",
    }
    assert failed["payload"] is None
    assert unrouted["headers"] == {
        "uri": "REPLY",
        "inReplyTo": sent[2].id,
        "error": "no handler for GET /nowhere",
        "code": "no_handler",
    }
    assert unrouted["payload"] is None


async def test_the_client_turns_replies_into_messages_and_remote_errors() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    server = factory.server(port=0, network=network)
    server.get("/echo", lambda msg: msg.payload)

    @server.get("/fail")
    def fail(msg: distro.Message) -> None:
        raise KeyError("x")

    @server.get("/reject")
    def reject(msg: distro.Message) -> None:
        raise distro.Reject("out_of_stock", "sku 7 is sold out", {"sku": 7})

    async with server, factory.client(port=server.address[1], network=network) as client:
        question = distro.message({"uri": "/echo"}, {"é": [1, 2**70]})
        reply = await client.request(question, timeout=5.0)
        assert reply.headers == {"uri": "REPLY", "inReplyTo": question.id}
        assert reply.payload == {"é": [1, 2**70]}
        bad = distro.message({"uri": "/fail"})
        with pytest.raises(distro.RemoteError) as caught:
            await client.request(bad, timeout=5.0)
        assert caught.value.message_id == bad.id
        assert caught.value.remote == f"internal error (message {bad.id})"
        assert caught.value.code == "handler_error" and caught.value.details is None
        with pytest.raises(distro.RemoteError) as caught:
            await client.request(distro.message({"uri": "/reject"}), timeout=5.0)
        error = caught.value
        assert (error.code, error.remote, error.message) == ("out_of_stock",) + (
            "sku 7 is sold out",
        ) * 2
        assert error.details == {"sku": 7}
        with pytest.raises(distro.RemoteError) as caught:
            await client.request(distro.message({"uri": "/nowhere", "verb": "PUT"}), timeout=5)
        assert caught.value.remote == "no handler for PUT /nowhere"
        assert caught.value.code == "no_handler"


async def test_received_goes_to_the_address_and_port_the_message_names() -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    acks = Recorder()
    ack_server = factory.server(port=0, network=network)
    ack_server.receive(acks)
    server = factory.server(port=0, network=network)
    handled = Recorder()
    server.post("/orders", handled)
    async with (
        ack_server,
        server,
        factory.client(port=server.address[1], network=network) as client,
    ):
        headers = {"uri": "/orders", "verb": "POST", "address": "memory"}
        msg = distro.message({**headers, "port": ack_server.address[1]}, {"n": 1})
        await client.send(msg)
        [ack] = await acks.wait_for(1)
    assert handled.messages == [msg]
    assert ack.headers == {"uri": "RECEIVED"}
    assert ack.payload == {"msgId": msg.id}
    assert server.stats.acks_sent == 1


@pytest.mark.parametrize("ack_any_address", [False, True])
async def test_received_to_an_address_that_is_not_the_sender_needs_permission(
    ack_any_address: bool,
) -> None:
    network = distro.MemoryNetwork()
    factory = distro.create("memory")
    acks = Recorder()
    ack_server = factory.server(port=0, network=network)
    ack_server.receive(acks)
    server = factory.server(port=0, network=network, ack_any_address=ack_any_address)
    server.receive(Recorder())
    async with (
        ack_server,
        server,
        factory.client(port=server.address[1], network=network) as client,
    ):
        port = ack_server.address[1]
        # The memory transport's peers are all "memory"; 127.0.0.2 is someone else.
        elsewhere = distro.message({"uri": "/orders", "address": "127.0.0.2", "port": port})
        await client.send(elsewhere)
        if ack_any_address:
            [ack] = await acks.wait_for(1)
            assert ack.payload == {"msgId": elsewhere.id}
            return
        await wait_until(lambda: server.stats.dropped.get("ack_refused") == 1)
        # The sender's own address is always acknowledged; only that one arrives.
        home = distro.message({"uri": "/orders", "address": "memory", "port": port})
        await client.send(home)
        await acks.wait_for(1)
        await wait_until(lambda: server.stats.acks_sent == 1)
    assert [ack.payload for ack in acks.messages] == [{"msgId": home.id}]


@given(json_values, json_values, st.text(max_size=20))
def test_a_request_spliced_from_a_message_s_encoding_is_the_one_encoded_afresh(
    payload: Any, extra: Any, reply_to: str
) -> None:
    # A message made by message() and not read yet becomes a request by writing the new
    # headers into its encoding; the bytes must be those of encoding it all again.
    headers = {
        "uri": "/orders",
        "verb": "POST",
        "x": extra if not isinstance(extra, (dict, list)) else 1,
    }
    msg = distro.message(headers, payload)
    for timeout, confirm in ((None, False), (2.5, False), (1.0, True)):
        spliced = _protocol.as_request(msg, reply_to, timeout, confirm)
        again = distro.message(headers, payload, id=msg.id)
        assert again.payload == msg.payload  # decoded: as_request encodes it afresh
        assert spliced == _protocol.as_request(again, reply_to, timeout, confirm)
