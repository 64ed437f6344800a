"""The benchmark tables: for each transport, distro and its baselines measured in one run.

A table has one column per implementation (distro first, then the raw baseline, then peers)
and one row per measurement. Each cell is one :func:`harness.run_pair` (two fresh processes).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bounce
import distro_side
import harness

import distro_core as distro


@dataclass
class Impl:
    """One column: an implementation and the process functions of each scenario it has."""

    label: str
    oneway: tuple[Callable[..., None], Callable[..., None]] | None = None
    rr: tuple[Callable[..., None], Callable[..., None]] | None = None
    confirm: tuple[Callable[..., None], Callable[..., None]] | None = None
    """Confirmed sends (``client.send(msg, confirm=True)``): distro only."""
    missing: str | None = None
    """Why this implementation cannot run here (shown instead of numbers), or None."""
    params: dict[str, Any] = field(default_factory=dict)
    short: str = ""
    """The name in ratio column headers (``distro/<short>``); the label's first word by default."""
    role: str = ""
    """``"best"``: the best straightforward raw code a user would write by hand (the targets
    compare distro with it); ``"naive"``: the plain per-message raw code beside it; ``""``: a
    peer framework."""

    def __post_init__(self) -> None:
        self.short = self.short or self.label.split()[0]


@dataclass
class Row:
    """One measurement in a table."""

    key: str
    label: str
    unit: str
    higher_is_better: bool


@dataclass
class Table:
    """One transport's comparison."""

    name: str
    title: str
    impls: list[Impl]
    oneway_modes: list[tuple[str, dict[str, Any]]]
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    notes: dict[tuple[str, str], str] = field(default_factory=dict)
    remarks: list[str] = field(default_factory=list)
    loop: str = "asyncio"
    """The event loop every process of this table runs on: ``"asyncio"`` or ``"uvloop"``."""

    @property
    def best(self) -> Impl | None:
        """The best raw baseline (the one the targets compare distro with), if any."""
        return next((i for i in self.impls if i.role == "best"), None)

    def rows(self) -> list[Row]:
        rows = [
            Row(f"oneway:{mode}", f"one-way {mode} msg/s", "msg/s", True)
            for mode, _ in self.oneway_modes
        ]
        if any(i.rr for i in self.impls):
            rows += [
                Row("rr:p50", "req/reply p50 µs (1 in flight)", "µs", False),
                Row("rr:p99", "req/reply p99 µs (1 in flight)", "µs", False),
                Row("rr:rate", "req/reply msg/s (32 in flight)", "msg/s", True),
            ]
        if any(i.confirm for i in self.impls):
            rows += [
                Row(
                    "confirm:rate",
                    f"confirmed send msg/s ({CONFIRM_IN_FLIGHT} in flight)",
                    "msg/s",
                    True,
                ),
                Row(
                    "confirm:p50",
                    f"confirmed send p50 µs ({CONFIRM_IN_FLIGHT} in flight)",
                    "µs",
                    False,
                ),
            ]
        return rows


CONFIRM_IN_FLIGHT = 64
"""Confirmed sends awaited at once in the confirmed-send rows."""


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _distro_impl(name: str) -> Impl:
    available = distro.transports()
    if name not in available:
        return Impl("distro", missing=f"transport {name!r} not available (not installed yet)")
    return Impl(
        "distro",
        oneway=(distro_side.receiver, distro_side.sender),
        rr=(distro_side.echo_server, distro_side.client),
        confirm=(distro_side.confirm_server, distro_side.confirm_sender)
        if name in ("udp4", "udp6", "tcp")
        else None,
        params={"transport": name},
    )


def build_tables(names: list[str], loops: tuple[str, ...] = ("asyncio",)) -> list[Table]:
    """The tables for the transports ``names`` (udp4, udp6, tcp, zmq, redis...), one per event
    loop of ``loops`` (``"asyncio"``, ``"uvloop"``): on uvloop every process of the table, distro
    and baselines alike, runs on uvloop."""
    tables = []
    for name in names:
        for loop in loops:
            table = _TABLES[name](name)
            if loop != "asyncio":
                table.loop = loop
                table.title += f" [{loop}]"
                for impl in table.impls:
                    impl.params = {**impl.params, "loop": loop}
                    if loop == "uvloop" and not impl.missing and not _have("uvloop"):
                        impl.missing = "uvloop not installed (pip install 'distro-core[uvloop]')"
            tables.append(table)
    return tables


def _udp(name: str) -> Table:
    import raw_udp

    host = harness.HOST6 if name == "udp6" else harness.HOST4
    naive = Impl(
        "raw naive: DatagramProtocol",
        short="naive",
        role="naive",
        oneway=(raw_udp.receiver, raw_udp.sender),
        rr=(raw_udp.echo_server, raw_udp.client),
    )
    best = Impl(
        "raw best: add_reader, drained",
        short="best",
        role="best",
        oneway=(raw_udp.tuned_receiver, raw_udp.tuned_sender),
        rr=(raw_udp.tuned_echo_server, raw_udp.tuned_client),
    )
    table = Table(
        name,
        f"{name}: distro vs raw asyncio + orjson on {host}",
        [_distro_impl(name), best, naive],
        [("flood", {"window": None}), ("window 128", {"window": 128})],
    )
    for impl in table.impls:
        impl.params["host"] = host
    table.remarks.append(
        "flood: senders send as fast as they can (bursts of 64, then yield), the receiver's "
        "delivered rate and the loss are reported; window 128: the sender stays at most 128 "
        "messages ahead of the receiver's count (shared memory), the same for all"
    )
    table.remarks.append(CONFIRM_REMARK)
    table.remarks.append(
        "raw naive uses asyncio's DatagramProtocol, which reads one datagram per wake-up into "
        "a fresh 256 KiB buffer; raw best reads the socket itself with add_reader and drains "
        "every queued datagram per wake-up, as distro's udp transport does; both build each "
        "message with str(uuid4()) + orjson.dumps"
    )
    return table


CONFIRM_REMARK = (
    f"confirmed send: distro only, {CONFIRM_IN_FLIGHT} tasks each awaiting "
    "client.send(msg, confirm=True, timeout=5) in turn (the server confirms once its handler "
    "ran; over udp the client sends again after 50 ms, doubling, until confirmed); the raw "
    "baselines have no confirmed send (the nearest is their request/reply row), so compare "
    "it with distro's own one-way and request/reply rows of the same run"
)


NOWAIT = "send_nowait"
"""The one-way row where distro's sender calls ``client.send_nowait`` and drains per burst;
the baselines are not run again for it (their code is the same as the first row's)."""


def _tcp(name: str) -> Table:
    import raw_tcp

    best = Impl(
        "raw best: writelines per burst",
        short="best",
        role="best",
        oneway=(raw_tcp.receiver, raw_tcp.batched_sender),
        rr=(raw_tcp.echo_server, raw_tcp.client),
        params={"host": harness.HOST4},
    )
    naive = Impl(
        "raw naive: write per message",
        short="naive",
        role="naive",
        oneway=(raw_tcp.receiver, raw_tcp.sender),
        params={"host": harness.HOST4},
    )
    table = Table(
        name,
        f"{name}: distro vs asyncio Protocol, newline-delimited JSON + orjson",
        [_distro_impl(name), best, naive],
        [("", {"window": None}), (NOWAIT, {"window": None, "nowait": True, "distro_only": True})],
    )
    table.remarks.append(
        "one-way: distro awaits client.send(msg) per message; one-way send_nowait: distro "
        "calls client.send_nowait(msg) per message and awaits client.drain() per burst of 64 "
        "(the raw columns repeat their first row: their code is the same)"
    )
    table.remarks.append(
        "raw best builds each burst of 64 messages (str(uuid4()) + orjson.dumps each) and "
        "writes it with one transport.writelines; raw naive calls transport.write per message "
        "(a send system call each); both receivers split on newlines and orjson-decode each "
        "line. Request/reply: one raw client (a future per request id, transport.write per "
        "request, as one writes it by hand), shown in the best column"
    )
    table.remarks.append(CONFIRM_REMARK)
    return table


def _zmq(name: str) -> Table:
    impls = [_distro_impl(name)]
    if _have("zmq"):
        import raw_zmq

        impls.append(
            Impl(
                "raw best: NOBLOCK send",
                short="best",
                role="best",
                oneway=(raw_zmq.receiver, raw_zmq.sender),
                rr=(raw_zmq.echo_server, raw_zmq.client),
                params={"host": harness.HOST4},
            )
        )
        impls.append(
            Impl(
                "raw naive: await send",
                short="naive",
                role="naive",
                oneway=(raw_zmq.receiver, raw_zmq.naive_sender),
                params={"host": harness.HOST4},
            )
        )
    else:
        impls.append(Impl("raw pyzmq", role="best", missing="pyzmq not installed"))
    table = Table(name, f"{name}: distro vs pyzmq (zmq.asyncio) DEALER/ROUTER", impls, [("", {})])
    table.remarks.append(
        "raw best sends on a blocking shadow socket with NOBLOCK and awaits the asyncio socket "
        "only when that would block (pyzmq's advice, and what distro-zmq does); raw naive "
        "awaits zmq.asyncio's send per message; the same receiver (NOBLOCK drain) for both"
    )
    return table


def _redis(name: str) -> Table:
    impls = [_distro_impl(name)]
    if _have("redis"):
        import raw_redis

        impls.append(
            Impl(
                "raw best: pipelined",
                short="best",
                role="best",
                oneway=(raw_redis.receiver, raw_redis.sender),
                rr=(raw_redis.echo_server, raw_redis.client),
            )
        )
        impls.append(
            Impl(
                "raw naive: await publish",
                short="naive",
                role="naive",
                oneway=(raw_redis.receiver, raw_redis.naive_sender),
            )
        )
    else:
        impls.append(Impl("raw redis-py", role="best", missing="redis not installed"))
    if _have("faststream") and _have("redis"):
        import peers

        impls.append(
            Impl(
                "FastStream",
                oneway=(peers.faststream_receiver, peers.faststream_sender),
                rr=(peers.faststream_server, peers.faststream_client),
            )
        )
    else:
        impls.append(Impl("FastStream", missing="faststream[redis] not installed"))
    if _have("kombu") and _have("redis"):
        import peers

        impls.append(Impl("Kombu", oneway=(peers.kombu_receiver, peers.kombu_sender)))
    else:
        impls.append(Impl("Kombu", missing="kombu not installed"))
    table = Table(
        name,
        f"{name}: distro vs redis-py, FastStream and Kombu on {harness.REDIS_URL}",
        impls,
        [("", {})],
    )
    table.remarks.append(
        "raw best (redis-py) PUBLISHes in pipelines of 64 (the burst) to a subscriber; raw "
        "naive awaits one PUBLISH per message (a round trip each); FastStream "
        "publishes one message per await as its API does; Kombu is a queue (LPUSH/BRPOP), "
        "not pub/sub, and has no request/reply"
    )
    return table


def _redis_streams(name: str) -> Table:
    import streams

    impls = [
        Impl("distro", oneway=(streams.distro_receiver, streams.distro_sender))
        if name in distro.transports()
        else Impl("distro", missing=f"transport {name!r} not available (not installed yet)")
    ]
    if _have("redis"):
        import raw_redis

        impls.append(
            Impl(
                "raw redis-py",
                role="best",
                oneway=(raw_redis.streams_receiver, raw_redis.streams_sender),
            )
        )
    else:
        impls.append(Impl("raw redis-py", role="best", missing="redis not installed"))
    if _have("faststream") and _have("redis"):
        import peers

        impls.append(
            Impl(
                "FastStream",
                oneway=(peers.faststream_streams_receiver, peers.faststream_streams_sender),
            )
        )
    else:
        impls.append(Impl("FastStream", missing="faststream[redis] not installed"))
    table = Table(
        name,
        f"{name}: a consumer group of {streams.MEMBERS} processes, distro vs redis-py and "
        f"FastStream on {harness.REDIS_URL}",
        impls,
        [("group of 2", {})],
    )
    table.remarks.append(
        "each column: one sender process and a group of two consumer processes on one stream; "
        "the rate is what the group consumed (and acknowledged). distro: servers with "
        "group='bench', a client awaiting send per message (XADD MAXLEN ~ 100000, batched per "
        "loop iteration), handlers settled by XACK per batch; raw redis-py: XADD pipelined by "
        "64, XREADGROUP COUNT 100, orjson per entry, XACK per batch; FastStream: "
        "StreamSub(group=...), one awaited publish per message"
    )
    return table


def _nats(name: str) -> Table:
    import nats_side

    impls = [_distro_impl(name)]
    if not impls[0].missing:
        impls[0].oneway = (nats_side.receiver, distro_side.sender)
    if _have("nats"):
        import raw_nats

        impls.append(
            Impl(
                "raw nats-py",
                role="best",
                oneway=(raw_nats.receiver, raw_nats.sender),
                rr=(raw_nats.echo_server, raw_nats.client),
            )
        )
    else:
        impls.append(Impl("raw nats-py", role="best", missing="nats-py not installed"))
    if _have("faststream") and _have("nats"):
        import peers_nats

        impls.append(
            Impl(
                "FastStream",
                oneway=(peers_nats.receiver, peers_nats.sender),
                rr=(peers_nats.echo_server, peers_nats.client),
            )
        )
    else:
        impls.append(Impl("FastStream", missing="faststream[nats] not installed"))
    table = Table(
        name,
        f"{name}: distro vs nats-py and FastStream's NatsBroker on {harness.NATS_URL}",
        impls,
        [("", {}), ("queue group of 2", {"group": 2})],
    )
    table.remarks.append(
        "one-way: one publisher process, one subscriber process; queue group of 2: one "
        "publisher, two subscriber processes in one queue group, the rate is what the group "
        "received. Every side builds a ~150-byte JSON message per message. distro: "
        "`await client.send(distro.message(...))` to a server's POST handler (group='bench' for "
        "the group); raw nats-py: `await nc.publish(subject, orjson.dumps(...))` with no flush "
        "per message, a `nc.subscribe(subject, cb=...)` coroutine callback that orjson-decodes "
        "each message (queue='bench' for the group); FastStream: one awaited "
        "`broker.publish(dict, subject)` per message, a `@broker.subscriber` taking the dict"
    )
    table.remarks.append(
        "request/reply: distro `client.request` to a handler returning the payload; raw: "
        "`await nc.request(subject, data, timeout=1.0)` answered by `msg.respond(...)` with the "
        "JSON decoded on both sides; FastStream: `broker.request(dict, subject)` answered by a "
        "subscriber returning a dict"
    )
    return table


JS_PUBLISH = "publish (acked, 64 in flight)"
JS_CONSUME = "consume (durable pull)"


def _jetstream(name: str) -> Table:
    import jetstream

    impls = [
        Impl("distro", oneway=(jetstream.distro_receiver, jetstream.distro_sender))
        if name in distro.transports()
        else Impl("distro", missing=f"transport {name!r} not available (not installed yet)"),
        Impl("raw nats-py", role="best", oneway=(jetstream.raw_receiver, jetstream.raw_sender)),
    ]
    for impl in impls:
        impl.params["transport"] = name if impl.label == "distro" else None
    table = Table(
        name,
        f"{name}: distro vs raw nats-py JetStream on {harness.NATS_URL}",
        impls,
        [(JS_PUBLISH, {"js_mode": "publish"}), (JS_CONSUME, {"js_mode": "consume"})],
    )
    table.remarks.append(
        "publish: one publisher process, the rate is messages stored in the stream (their "
        "PubAcks received) per second; raw: js.publish_async with publish_async_max_pending=64; "
        "distro: await client.send(msg) on a client made with max_unacked=64 (its sends carry a "
        "Nats-Msg-Id for JetStream's de-duplication). consume: the stream is filled first, "
        f"then one consumer process makes its durable consumer and reads it all; raw: "
        f"pull_subscribe(durable) + fetch({jetstream.FETCH}), orjson and await msg.ack() per "
        "message; distro: a server with group='bench' (its durable consumer), handler counting"
    )
    return table


_TABLES: dict[str, Callable[[str], Table]] = {
    "udp4": _udp,
    "udp6": _udp,
    "tcp": _tcp,
    "zmq": _zmq,
    "redis": _redis,
    "redis-streams": _redis_streams,
    "nats": _nats,
    "jetstream": _jetstream,
    "redis-bounce": bounce.redis_table,
    "nats-bounce": bounce.nats_table,
}
TRANSPORTS = list(_TABLES)


def measure(table: Table, sizes: dict[str, Any], log: Callable[[str], None]) -> None:
    """Fill ``table.values`` by running every scenario of every implementation.

    Implementations take turns scenario by scenario (distro, then the baselines), so that a
    burst of load from elsewhere on the machine hits neighbouring cells alike. With
    ``sizes["repeat"]`` above 1 the turns are repeated and each value is the best of them.
    """
    runnable = [impl for impl in table.impls if not impl.missing]
    inherited: dict[str, Any] = {}
    for turn in range(sizes.get("repeat", 1)):
        # Fresh uris (and so channels) each turn: nothing left over from the last one counts.
        uris = {impl.label: harness.unique_uri("bench") for impl in runnable}
        suffix = f" (turn {turn + 1})" if sizes.get("repeat", 1) > 1 else ""
        for mode, extra in table.oneway_modes:
            for impl in runnable:
                if not impl.oneway:
                    continue
                if extra.get("distro_only") and impl.label != "distro":
                    # Compared with the baselines' first one-way row of the same run.
                    first = f"oneway:{table.oneway_modes[0][0]}"
                    if (impl.label, first) in table.values:
                        table.values[(impl.label, f"oneway:{mode}")] = table.values[
                            (impl.label, first)
                        ]
                        table.notes[(impl.label, f"oneway:{mode}")] = "the row above, repeated"
                    continue
                log(f"  {table.name} {impl.label}: one-way {mode or 'throughput'}{suffix} ...")
                params = {**sizes, **impl.params, **inherited, **extra, "uri": uris[impl.label]}
                params["label"] = f"oneway{mode.replace(' ', '')}"
                _cell(table, impl, f"oneway:{mode}", _oneway, impl, params, mode, table)
                rcvbuf = table.values.get((impl.label, "rcvbuf"))
                if impl.label == "distro" and rcvbuf:
                    # The raw UDP baseline gets the same receive buffer as distro's socket.
                    inherited["rcvbuf"] = int(rcvbuf)
        for impl in runnable:
            if impl.rr:
                log(f"  {table.name} {impl.label}: request/reply{suffix} ...")
                params = {**sizes, **impl.params, **inherited, "uri": uris[impl.label]}
                params.update(server=True, label="rr")
                _cell(table, impl, "rr", _rr, impl, params, table)
        for impl in runnable:
            if impl.confirm:
                log(f"  {table.name} {impl.label}: confirmed sends{suffix} ...")
                params = {**sizes, **impl.params, **inherited, "uri": uris[impl.label]}
                params.update(server=True, label="confirm", confirm_outstanding=CONFIRM_IN_FLIGHT)
                _cell(table, impl, "confirm:rate", _confirm, impl, params, table)


def _best(table: Table, label: str, key: str, value: float, higher_is_better: bool) -> bool:
    """Keep ``value`` when it beats the one already measured; returns whether it did."""
    old = table.values.get((label, key))
    if old is None or math.isnan(old) or (value > old if higher_is_better else value < old):
        table.values[(label, key)] = value
        return True
    return False


def _cell(table: Table, impl: Impl, key: str, run: Callable[..., None], *args: Any) -> None:
    try:
        run(*args)
    except Exception as exc:  # one failed cell must not lose the rest of the run
        first = str(exc).strip().splitlines()
        table.notes[(impl.label, key)] = "failed: " + (first[-1] if first else repr(exc))[:160]
        table.values.setdefault((impl.label, key), math.nan)
        print(f"    FAILED {impl.label} {key}: {exc}", flush=True)


def _oneway(impl: Impl, params: dict[str, Any], mode: str, table: Table) -> None:
    assert impl.oneway is not None
    receiver, sender = impl.oneway
    params = {**params, "timeout": params["seconds"] * 3 + 10}
    got = harness.run_pair(receiver, sender, params, params["seconds"] * 4 + 30)
    sent, received = got["sent"], got["received"]
    elapsed = got["t_last"] - got["t0"] if received else math.nan
    key = f"oneway:{mode}"
    rate = received / elapsed if received and elapsed > 0 else 0.0
    if _best(table, impl.label, key, rate, True):
        lost = sent - received
        note = f"{received:,}/{sent:,} delivered"
        if lost:
            note += f", {lost / sent:.1%} lost"
        table.notes[(impl.label, key)] = note
    if "rcvbuf" in got:
        table.values[(impl.label, "rcvbuf")] = got["rcvbuf"]


def _rr(impl: Impl, params: dict[str, Any], table: Table) -> None:
    assert impl.rr is not None
    server, client = impl.rr
    timeout = params["seconds"] * 6 + 40
    got = harness.run_pair(server, client, {**params, "timeout": timeout}, timeout)
    one, many = got["one"], got["many"]
    if _best(table, impl.label, "rr:p50", one["p50"], False):
        table.notes[(impl.label, "rr:p50")] = f"{one['done']:,} requests"
    _best(table, impl.label, "rr:p99", one["p99"], False)
    if _best(table, impl.label, "rr:rate", many["rate"], True):
        table.notes[(impl.label, "rr:rate")] = f"{many['done']:,} requests"
        if got.get("lost"):
            table.notes[(impl.label, "rr:rate")] += f", {got['lost']} timed out"


def _confirm(impl: Impl, params: dict[str, Any], table: Table) -> None:
    assert impl.confirm is not None
    server, sender = impl.confirm
    timeout = params["seconds"] * 4 + 40
    got = harness.run_pair(server, sender, {**params, "timeout": timeout}, timeout)
    if _best(table, impl.label, "confirm:rate", got["rate"], True):
        note = (
            f"{got['done']:,} confirmed; frames re-sent {got['resent']:,}, "
            f"repeats answered from the server's window {got['repeats']:,}, "
            f"handled twice {got['handled_twice']:,}"
        )
        if got["failed"]:
            note += ", failed: " + ", ".join(f"{k} {v:,}" for k, v in got["failed"].items())
        table.notes[(impl.label, "confirm:rate")] = note
    _best(table, impl.label, "confirm:p50", got["p50"], False)
