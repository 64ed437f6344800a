"""Where a message's time goes: distro's hot path split into steps, each timed in this one
process next to the raw baseline's equivalent step, in nanoseconds per message.

Steps (the message is the benchmark's: ``{"id", "headers": {"uri", "verb": "POST"}, "payload":
{"seq", "customer", "qty", "total"}}``, about 150 bytes):

* **build**: ``distro.message(headers, payload)`` (id, checks, encoding, the Message), split
  into the id, the orjson encoding and the rest; raw: ``orjson.dumps`` of the same dict with
  ``str(uuid.uuid4())``.
* **send**: an already built message into a tcp connection whose peer (a child process)
  reads and discards, in bursts of 64 with one ``await asyncio.sleep(0)`` per burst as the
  benchmark's senders do: ``await client.send(msg)``, and ``client.send_nowait(msg)`` with
  ``await client.drain()`` per burst; raw: ``transport.write(data + b"\\n")`` per message
  (``raw_tcp.sender``) and one ``writelines`` per burst (``raw_tcp.batched_sender``). The
  cost of the empty burst loop (the ``sleep(0)``, one loop iteration) is subtracted.
* **receive**: a tcp server connection's read path (``ServerProtocol.buffer_updated``: frame
  splitting, the inlet, one call per frame into a receiver that does nothing) over a stream of
  frames cut into 64 KiB reads; the copy into the read buffer that stands in for
  ``recv_into`` is timed alone and subtracted. Raw: ``raw_tcp``'s ``data_received``
  (``bytes.split`` on newlines, a call per line).
* **parse**: ``distro.parse(frame)``; raw: ``orjson.loads``.
* **route**: ``Router.match`` among 100 routes; raw: a dict look-up by ``(verb, uri)``.
* **call**: ``Server.frame_received`` of a tcp server with a plain handler (parse, route,
  Message, call, bookkeeping) minus parse and route; raw: loads + dict + call, minus the same.

Private pieces are called directly (``_ids.new_id``, ``_codec._OPTS``, ``_routing.Router``,
``_transports._tcp_server``); they may change without notice. Each number is the best of
several repeats (``timeit``, garbage collector off while timing, the cost of an empty loop
subtracted): the machine is shared and noisy, so read small differences with care.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import timeit
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from harness import payload
from raw_tcp import _Lines

import distro_core as distro
from distro_core import transport as kit
from distro_core._codec import _OPTS  # the options distro's encoding passes to orjson
from distro_core._ids import new_id
from distro_core._routing import Router
from distro_core._transports._tcp_server import READ_SIZE, ServerLimits, TcpListener
from distro_core.framing import DEFAULT_MAX_FRAME_SIZE

HOST = "127.0.0.1"
URI = "/service50/orders"
HEADERS = {"uri": URI, "verb": "POST"}
PAYLOAD = payload(123456)
ROUTES = 100
BURST = 64
NL = b"\n"

# A peer that reads every connection to its end and discards the bytes (one thread each).
_DISCARD = """
import socket, sys, threading
server = socket.socket()
server.bind((sys.argv[1], 0))
server.listen(16)
print(server.getsockname()[1], flush=True)
def drain(conn):
    buf = bytearray(1 << 20)
    with conn:
        while conn.recv_into(buf):
            pass
def accept():
    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"""


class _Discard:
    """The core's side of a server connection, doing nothing with the frames."""

    def frame_received(self, data: bytes, peer: kit.Peer) -> None:
        pass

    def frame_dropped(self, reason: str, detail: str) -> None:
        raise RuntimeError(f"costs: a frame was dropped: {reason}: {detail}")


class _FakePeer(kit.Peer):
    """A peer that sends nothing (no reply is asked for)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(HOST)

    def send(self, data: bytes, reply_to: str) -> None:
        pass


class _Timer:
    """timeit with calibrated loop counts, the empty loop's cost subtracted, best of repeats;
    the statements of one group take turns, so that a burst of load from elsewhere on the
    machine lands on all of them rather than on one."""

    def __init__(self, quick: bool) -> None:
        self.repeat = 3 if quick else 9
        self.target = 0.008 if quick else 0.03  # seconds per statement and repeat
        self.empty = 0.0
        self.empty = self.group([("pass", {}, 1)])[0]

    def group(self, stmts: list[tuple[str, dict[str, Any], int]]) -> list[float]:
        """Nanoseconds per message of each ``(stmt, names, per)``, where ``stmt`` handles
        ``per`` messages."""
        timers = []
        for stmt, names, _ in stmts:
            timer = timeit.Timer(stmt, globals=names)
            number = 1
            while True:
                took = timer.timeit(number)
                if took >= self.target / 5:
                    break
                number *= 10 if took < self.target / 50 else 2
            timers.append((timer, max(1, int(number * self.target / took))))
        best = [float("inf")] * len(stmts)
        for _ in range(self.repeat):
            for index, (timer, number) in enumerate(timers):
                best[index] = min(best[index], timer.timeit(number) / number)
        return [
            max(0.0, seconds * 1e9 - self.empty) / per
            for seconds, (_, _, per) in zip(best, stmts, strict=True)
        ]


async def _send_costs(
    quick: bool, repeat: int, log: Callable[[str], None]
) -> dict[str, tuple[float, float]]:
    """ns per message of each way of sending into a discarding peer: (distro, raw)."""
    peer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _DISCARD,
        HOST,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert peer.stdout is not None
        port = int(await asyncio.wait_for(peer.stdout.readline(), 10))
        loop = asyncio.get_running_loop()
        msg = distro.message(HEADERS, PAYLOAD)
        data = msg.to_bytes()
        bursts = 300 if quick else 1000
        sleep = asyncio.sleep

        async def empty() -> None:
            for _ in range(bursts):
                await sleep(0)

        client = distro.create("tcp").client(address=HOST, port=port)
        await client.open()
        transport, proto = await loop.create_connection(
            lambda: _Lines(lambda line: None), HOST, port
        )
        send, send_nowait, drain = client.send, client.send_nowait, client.drain
        write, writelines = transport.write, transport.writelines

        async def distro_send() -> None:
            for _ in range(bursts):
                for _ in range(BURST):
                    await send(msg)
                await sleep(0)

        async def distro_nowait() -> None:
            for _ in range(bursts):
                for _ in range(BURST):
                    send_nowait(msg)
                await drain()
                await sleep(0)

        async def raw_write() -> None:
            for _ in range(bursts):
                for _ in range(BURST):
                    write(data + NL)
                    if proto.writable is not None:
                        await proto.drain()
                await sleep(0)

        async def raw_writelines() -> None:
            for _ in range(bursts):
                writelines([data + NL for _ in range(BURST)])
                if proto.writable is not None:
                    await proto.drain()
                await sleep(0)

        ways: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "empty": empty,
            "distro_send": distro_send,
            "distro_nowait": distro_nowait,
            "raw_write": raw_write,
            "raw_writelines": raw_writelines,
        }
        best = dict.fromkeys(ways, float("inf"))
        try:
            for turn in range(repeat + 1):  # the first turn warms up and is not kept
                for name, way in ways.items():
                    gc.disable()
                    try:
                        started = time.perf_counter_ns()
                        await way()
                        took = time.perf_counter_ns() - started
                    finally:
                        gc.enable()
                    if turn:
                        best[name] = min(best[name], took / (bursts * BURST))
                    await sleep(0.01)  # let the peer catch up between ways
        finally:
            await client.aclose()
            transport.close()
        log(f"  costs: send, {bursts * BURST:,} messages per way and turn")
        base = best["empty"]
        return {
            "send": (best["distro_send"] - base, best["raw_write"] - base),
            "send_nowait": (best["distro_nowait"] - base, best["raw_writelines"] - base),
            "burst_loop": (base, base),
        }
    finally:
        assert peer.stdin is not None
        peer.stdin.close()
        try:
            await asyncio.wait_for(peer.wait(), 5)
        except asyncio.TimeoutError:
            peer.kill()
            await peer.wait()


async def _measure(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    timer = _Timer(quick)
    rows: dict[str, tuple[float, float]] = {}
    msg = distro.message(HEADERS, PAYLOAD)
    wire = msg.to_bytes()
    names: dict[str, Any] = {
        "message": distro.message,
        "parse": distro.parse,
        "dumps": orjson.dumps,
        "loads": orjson.loads,
        "uuid4": uuid.uuid4,
        "new_id": new_id,
        "OPTS": _OPTS,
        "H": HEADERS,
        "P": PAYLOAD,
        "ID": msg.id,
        "WIRE": wire,
    }

    def pairs(wanted: list[tuple[str, str, str | None]], per: int = 1, **more: Any) -> None:
        """Time ``(key, distro_stmt, raw_stmt)`` in one group; rows[key] = (distro, raw)."""
        scope = {**names, **more}
        stmts = [(s, scope, per) for _, ours, raw in wanted for s in (ours, raw) if s]
        found = iter(timer.group(stmts))
        for key, _, raw in wanted:
            rows[key] = (next(found), float("nan") if raw is None else next(found))

    log("  costs: build ...")
    pairs(
        [
            ("build", "message(H, P)", "dumps({'id': str(uuid4()), 'headers': H, 'payload': P})"),
            ("id", "new_id()", "str(uuid4())"),
            (
                "encode",
                "dumps({'id': ID, 'headers': H, 'payload': P}, option=OPTS)",
                "dumps({'id': ID, 'headers': H, 'payload': P})",
            ),
        ]
    )
    build, ident, encode = rows["build"], rows["id"], rows["encode"]
    rows["rest"] = (build[0] - ident[0] - encode[0], build[1] - ident[1] - encode[1])

    # Routing: 100 static routes (distro's own router and a dict), and 100 {param} ones.
    router: Router[str] = Router()
    table: dict[tuple[str, str], Any] = {}
    for i in range(ROUTES):
        router.add("POST", f"/service{i}/orders", f"h{i}")
        router.add("POST", f"/service{i}/orders/{{id}}", f"p{i}")
        table[("POST", f"/service{i}/orders")] = f"h{i}"

    # Dispatch: a started tcp server with 100 routes, a plain handler on the message's uri.
    server = distro.create("tcp").server(address=HOST, port=0)
    calls = [0]

    def handler(msg: distro.Message) -> None:
        calls[0] += 1

    def other(msg: distro.Message) -> None:
        pass

    for i in range(ROUTES):
        server.post(f"/service{i}/orders", handler if f"/service{i}/orders" == URI else other)

    def raw_handler(obj: dict[str, Any]) -> None:
        pass

    raw_table = {key: raw_handler for key in table}

    def raw_dispatch(data: bytes) -> None:
        obj = orjson.loads(data)
        headers = obj["headers"]
        raw_table[(headers["verb"], headers["uri"])](obj)

    log("  costs: parse, route, dispatch ...")
    async with server:
        pairs(
            [
                ("parse", "parse(WIRE)", "loads(WIRE)"),
                ("route", "match('POST', U)", "table[('POST', U)]"),
                ("route_param", "match('POST', UP)", None),
                ("dispatch", "received(WIRE, PEER)", "raw_dispatch(WIRE)"),
            ],
            match=router.match,
            table=table,
            U=URI,
            UP=URI + "/42",
            received=server.frame_received,
            PEER=_FakePeer(),
            raw_dispatch=raw_dispatch,
        )
        handled = server.stats.handled
        dropped = dict(server.stats.dropped)
    if not calls[0] or calls[0] != handled or dropped:
        raise RuntimeError(f"costs: dispatch did not reach the handler ({handled}, {dropped})")
    dispatch, parse, route = rows["dispatch"], rows["parse"], rows["route"]
    rows["call"] = (dispatch[0] - parse[0] - route[0], dispatch[1] - parse[1] - route[1])

    # Receive: a server connection's read path over 64 KiB reads of a stream of frames.
    log("  costs: receive ...")
    frames = 4096
    stream = b"".join(distro.message(HEADERS, payload(n)).to_bytes() + NL for n in range(frames))
    chunks = [stream[at : at + READ_SIZE] for at in range(0, len(stream), READ_SIZE)]
    limits = ServerLimits(
        max_frame_size=DEFAULT_MAX_FRAME_SIZE,
        max_connections=1024,
        idle_timeout=None,
        max_buffered=64 << 20,
        max_write_buffer=4 << 20,
    )
    listener = TcpListener(_Discard(), limits)  # private: not bound, its protocol fed directly
    protocol: Any = listener.accept()
    lines = _Lines(lambda line: None)
    scope = {
        "CHUNKS": chunks,
        "BUF": listener.read_buffer,
        "updated": protocol.buffer_updated,
        "received": lines.data_received,
    }
    feed, copy, raw = timer.group(
        [
            ("for c in CHUNKS:\n    BUF[: len(c)] = c\n    updated(len(c))", scope, frames),
            ("for c in CHUNKS:\n    BUF[: len(c)] = c", scope, frames),
            ("for c in CHUNKS:\n    received(c)", scope, frames),
        ]
    )
    if protocol._decoder.buffered or lines.tail:  # whole frames only: nothing left over
        raise RuntimeError("costs: the receive stream did not end with a whole frame")
    rows["receive"] = (feed - copy, raw)

    rows.update(await _send_costs(quick, timer.repeat, log))

    sender = tuple(rows["build"][i] + rows["send_nowait"][i] for i in (0, 1))
    receiver = tuple(rows["receive"][i] + rows["dispatch"][i] for i in (0, 1))
    rows["sender"] = (sender[0], sender[1])
    rows["receiver"] = (receiver[0], receiver[1])
    loads_ns = rows["parse"][1]
    return {
        "repeat": timer.repeat,
        "loop_ns": timer.empty,
        "message_bytes": len(wire),
        "frames_per_read": frames / len(chunks),
        "rows": rows,
        "loads_ns": loads_ns,
        "loads_per_second": 1e9 / loads_ns if loads_ns else float("nan"),
    }


def run(quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Time every step; returns ``{"rows": {step: (distro_ns, raw_ns)}, ...}``."""
    if "tcp" not in distro.transports():
        return {"missing": "transport 'tcp' not available"}
    log("  costs: per-message cost split (one process) ...")
    started = time.perf_counter()
    result = asyncio.run(_measure(quick, log))
    result["seconds"] = time.perf_counter() - started
    return result


_ROWS = [
    ("build", "build: distro.message(h, p) | uuid4 + orjson.dumps"),
    ("id", "  id: new_id() | str(uuid4())"),
    ("encode", "  encode: orjson.dumps of the dict"),
    ("rest", "  rest: checks, copies, Message"),
    ("send", "send: await client.send | write each"),
    ("send_nowait", "send: send_nowait, drain per 64 | writelines"),
    ("receive", "receive: tcp read path | bytes.split"),
    ("parse", "parse: distro.parse | orjson.loads"),
    ("route", "route: Router.match (100) | dict"),
    ("route_param", "  route {param} (memoised) | -"),
    ("call", "call: dispatch - parse - route"),
    ("dispatch", "  dispatch: frame_received | loads+dict+call"),
    ("sender", "sender side: build + send_nowait"),
    ("receiver", "receiver side: receive + dispatch"),
]


def _cell(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"


def render(result: dict[str, Any]) -> str:
    """The cost split as a table."""
    head = "== costs: ns per message by step, distro vs raw (one process, tcp, asyncio) =="
    if "missing" in result:
        return head + f"\n   distro: not available: {result['missing']}"
    rows = result["rows"]
    lines = [["step: distro | raw", "distro", "raw", "distro-raw", "distro/raw"]]
    for key, label in _ROWS:
        ours, raw = rows[key]
        diff = "-" if raw != raw else f"{ours - raw:+,.0f}"
        ratio = "-" if raw != raw or raw <= 0 else f"{ours / raw:.2f}x"
        lines.append([label, _cell(ours), _cell(raw), diff, ratio])
    widths = [max(len(line[c]) for line in lines) for c in range(5)]
    out = [head]
    for line in lines:
        out.append(
            "  ".join(
                cell.ljust(w) if not c else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    sender, receiver = rows["sender"], rows["receiver"]
    out += [
        f"   best of {result['repeat']} repeats each (timeit, gc off while timing; an empty loop's "
        f"{result['loop_ns']:.0f} ns subtracted); the machine is noisy: small differences are "
        "not significant",
        f"   message {result['message_bytes']} bytes; receive: 64 KiB reads of "
        f"{result['frames_per_read']:.0f} frames each, the copy into the read buffer "
        "(recv_into's) subtracted; raw is raw_tcp's data_received",
        "   send: into a tcp peer (a child process) that discards, bursts of 64 then "
        f"sleep(0) as the bench senders do; that burst loop's {rows['burst_loop'][0]:.0f} "
        "ns/message subtracted; raw rows: raw_tcp.sender (write each) and batched_sender "
        "(writelines)",
        "   call: a started tcp server's frame_received with a plain handler, 100 routes, a fake "
        "peer, minus parse and route; raw: orjson.loads + dict + call, minus loads and dict",
        "   private pieces called directly: _ids.new_id, _codec._OPTS, _routing.Router, "
        "_transports._tcp_server.TcpListener/ServerProtocol",
        f"   one core: sender {1e9 / sender[0]:,.0f} msg/s distro, {1e9 / sender[1]:,.0f} raw; "
        f"receiver {1e9 / receiver[0]:,.0f} msg/s distro, {1e9 / receiver[1]:,.0f} raw",
        f"   ceiling: orjson.loads alone of this message {result['loads_ns']:.0f} ns = "
        f"{result['loads_per_second']:,.0f} messages/s per core",
        f"   ({result['seconds']:.1f} s)",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(render(run("--quick" in sys.argv, print)))
