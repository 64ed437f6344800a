"""The JavaScript original's tcp client against a distro tcp server: it writes one message,
``JSON.stringify({id, headers, payload})`` with a v4 id from ``Math.random`` and nothing after
it, and keeps the connection open. The bytes below were recorded from node 20 running
:data:`CLIENT_JS` (the original's client, as docs/wire-format.md describes it); where node is
installed, the last test runs it against a server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import distro_core as distro
from distro_core.testing import Recorder, wait_until

RECORDED = [
    b'{"id":"66135eaa-383e-49a5-b776-d29c2292448d","headers":{"uri":"/customer/7","verb":"POST"},'
    b'"payload":{"total":12.5,"note":"braces } { and \\"quotes\\" \\\\ and\\nnewline",'
    b'"\xc3\xa9":"\xc3\xbcn\xc3\xafc\xc3\xb8d\xc3\xa9 \xf0\x9f\x8e\x89"}}',
    b'{"id":"86e82f34-c6f9-4d35-8b46-d4b4f2f0c309","headers":{"uri":"/orders","verb":"PUT"},'
    b'"payload":[1,[2,[3,{}]],null,true,"]"]}',
]
"""What the original's client wrote for two messages (one connection each, no newline)."""

EXPECTED = [
    (
        "66135eaa-383e-49a5-b776-d29c2292448d",
        "/customer/7",
        {"total": 12.5, "note": 'braces } { and "quotes" \\ and\nnewline', "é": "ünïcødé 🎉"},
    ),
    ("86e82f34-c6f9-4d35-8b46-d4b4f2f0c309", "/orders", [1, [2, [3, {}]], None, True, "]"]),
]

CLIENT_JS = r"""
// The original's tcp client: per message a new connection, one write of the message's JSON
// and nothing after it; the connection stays open until the server writes something back.
const net = require("net");
function uuid() {
  return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
  });
}
const [port, count] = process.argv.slice(1).map(Number);
for (let n = 0; n < count; n++) {
  const msg = { id: uuid(), headers: { uri: "/js/" + n, verb: "POST" }, payload: { n, s: "}\"{" } };
  const socket = net.connect(port, "127.0.0.1", () => {
    socket.write(JSON.stringify({ id: msg.id, headers: msg.headers, payload: msg.payload }));
  });
  socket.on("data", () => socket.end());
  socket.on("error", () => {});
}
setTimeout(() => process.exit(0), 20000);
"""


@asynccontextmanager
async def serving(**options: object) -> AsyncIterator[tuple[distro.Server, Recorder]]:
    server = distro.create("tcp").server({"port": 0, **options})
    got = Recorder()
    server.post("/customer/{id}", got)
    server.put("/orders", got)
    server.post("/js/{n}", got)
    async with server:
        yield server, got


@asynccontextmanager
async def connection(server: distro.Server) -> AsyncIterator[asyncio.StreamWriter]:
    """A raw connection, held open until the block ends (as the original's client holds it)."""
    host, port = server.address
    _, writer = await asyncio.open_connection(host, port)
    try:
        yield writer
    finally:
        writer.close()
        await writer.wait_closed()


def assert_expected(messages: list[distro.Message]) -> None:
    got = sorted((m.id, m.uri, m.payload) for m in messages)
    assert got == sorted(EXPECTED)


async def test_one_message_without_a_newline_on_a_connection_left_open_is_handled() -> None:
    async with serving() as (server, got), connection(server) as first:
        first.write(RECORDED[0])
        async with connection(server) as second:
            second.write(RECORDED[1])
            assert_expected(await got.wait_for(2))
            assert server.stats.dropped == {}
    assert server.stats.received == 2


async def test_a_message_written_in_pieces_is_handled_once_whole() -> None:
    data = RECORDED[0]
    async with serving() as (server, got), connection(server) as writer:
        for start in range(0, len(data), 7):
            writer.write(data[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0)  # let the server read each piece on its own if it can
        [msg] = await got.wait_for(1)
        assert (msg.id, msg.uri, msg.payload) == EXPECTED[0]
        assert got.messages == [msg]  # not handled before it was whole, nor twice


async def test_messages_one_after_another_without_newlines_are_each_handled() -> None:
    async with serving() as (server, got), connection(server) as writer:
        writer.write(RECORDED[0] + RECORDED[1])
        assert_expected(await got.wait_for(2))
        # A newline-delimited distro client on another connection is not affected.
        async with distro.create("tcp").client(port=server.address[1]) as client:
            await client.send(distro.message({"uri": "/orders", "verb": "PUT"}, "distro"))
            await got.wait_for(3)
    assert server.stats.dropped == {}


async def test_a_large_message_without_a_newline_is_handled() -> None:
    note = 'x}{\\"' * 145_000  # 725,000 characters of what a scanner could trip on
    data = json.dumps(
        {"id": "big", "headers": {"uri": "/orders", "verb": "PUT"}, "payload": [note]},
        separators=(",", ":"),
    ).encode()
    assert 1_000_000 < len(data) < 1_048_576  # within the default max_frame_size
    async with serving() as (server, got), connection(server) as writer:
        writer.write(data)
        [msg] = await got.wait_for(1, timeout=20.0)
        assert msg.payload == [note]


async def test_a_cut_message_is_dropped_as_truncated_when_the_connection_ends() -> None:
    async with serving() as (server, got):
        async with connection(server) as writer:
            writer.write(RECORDED[0][:-1])  # the closing brace never comes
            await writer.drain()
        await wait_until(lambda: "truncated" in server.stats.dropped, what="a truncated frame")
        assert server.stats.dropped == {"truncated": 1}
        assert got.messages == []


async def test_a_message_over_the_limit_without_a_newline_drops_the_connection() -> None:
    async with serving(max_frame_size=100) as (server, got), connection(server) as writer:
        writer.write(RECORDED[0])  # 240 bytes, no newline, never complete within the limit
        await wait_until(lambda: "too_large" in server.stats.dropped, what="a too_large drop")
        assert got.messages == []


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_the_original_client_run_by_node_reaches_distro_handlers() -> None:
    node = shutil.which("node")
    assert node is not None
    count = 5
    async with serving() as (server, got):
        process = await asyncio.create_subprocess_exec(
            node,
            "-e",
            CLIENT_JS,
            str(server.address[1]),
            str(count),
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
        )
        try:
            messages = await got.wait_for(count, timeout=15.0)
        finally:
            process.kill()  # its connections stay open until then, as the original's do
            await process.wait()
    assert sorted(m.uri for m in messages) == [f"/js/{n}" for n in range(count)]
    for msg in messages:
        assert msg.payload == {"n": int(msg.params["n"]), "s": '}"{'}
        head = msg.id.split("-")
        assert [len(part) for part in head] == [8, 4, 4, 4, 12] and head[2][0] == "4"
    assert server.stats.dropped.get("invalid", 0) == 0
