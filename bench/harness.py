"""The process plumbing shared by every benchmark scenario.

A scenario is two functions run in two separate processes (``spawn``, so each starts from a fresh
interpreter): a *receiver* (or echo server) and a *sender* (or requesting client). They meet
through a :class:`Shared` block of shared memory and a result queue:

* the receiver starts listening, puts ``("ready", address)`` on the queue, counts every message
  it decodes (``Counter.hit``) and, when the sender has finished and everything it sent has
  arrived (or nothing arrived for a while: UDP loss), puts ``("receiver", {...})``;
* the sender connects, stamps ``t0`` just before its first message, sends, and puts
  ``("sender", {...})`` and the number it sent into ``Shared.sent``.

Every clock reading is ``time.perf_counter()``, which is CLOCK_MONOTONIC on Linux and so
comparable across the two processes. Everything is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing as mp
import os
import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

HOST4 = "127.0.0.1"
HOST6 = "::1"
REDIS_URL = "redis://127.0.0.1:6379"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
NATS_URL = "nats://127.0.0.1:4222"

IDLE_AFTER_SENDER = 0.5
"""Seconds without a new arrival, once the sender is done, after which the rest is lost."""

_CTX = mp.get_context("spawn")


def payload(seq: int) -> dict[str, Any]:
    """The payload of message ``seq``; with the headers and a uuid id the message is ~150 bytes."""
    return {"seq": seq, "customer": "c-42", "qty": 3, "total": 99.5}


def raw_message(uri: str, seq: int) -> bytes:
    """What a raw baseline sends: the same ``{"id","headers","payload"}`` shape as a distro
    message, built fresh (``str(uuid.uuid4())``) and encoded with orjson, per message."""
    return orjson.dumps(
        {"id": str(uuid.uuid4()), "headers": {"uri": uri, "verb": "POST"}, "payload": payload(seq)}
    )


def raw_request(uri: str, seq: int, reply_to: str) -> tuple[str, bytes]:
    """A raw request: its id (to wait on) and its encoding, with a ``replyTo`` header."""
    id = str(uuid.uuid4())
    headers = {"uri": uri, "verb": "POST", "replyTo": reply_to}
    return id, orjson.dumps({"id": id, "headers": headers, "payload": payload(seq)})


def raw_reply(request: dict[str, Any]) -> bytes:
    """What a raw echo server sends back: a fresh message answering ``request``."""
    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "headers": {"uri": "REPLY", "inReplyTo": request["id"]},
            "payload": request["payload"],
        }
    )


def unique_uri(kind: str) -> str:
    """A uri (and pub/sub channel) no other run on this machine uses."""
    return f"/{kind}/{uuid.uuid4().hex[:10]}"


def rss_kib() -> int:
    """This process's resident set size in KiB (``VmRSS`` in ``/proc/self/status``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Shared:
    """Counters in shared memory that both processes of a scenario read and write."""

    def __init__(self) -> None:
        self.sent = _CTX.RawValue(ctypes.c_long, -1)  # -1 until the sender has finished
        self.received = _CTX.RawValue(ctypes.c_long, 0)  # refreshed every 16 arrivals
        self.t0 = _CTX.RawValue(ctypes.c_double, 0.0)  # when the first message was sent
        self.stop = _CTX.RawValue(ctypes.c_int, 0)  # asks a server to close
        self.phase = _CTX.RawValue(ctypes.c_int, 0)  # free for a scenario's own hand-offs


class Counter:
    """What every receiver, raw or distro, does per message after decoding it: count it and note
    the time. The same object is used on both sides so that the bookkeeping costs the same."""

    __slots__ = ("last", "n", "shared")

    def __init__(self, shared: Shared) -> None:
        self.n = 0
        self.last = 0.0
        self.shared = shared

    def hit(self) -> None:
        n = self.n = self.n + 1
        self.last = time.perf_counter()
        if not n & 15:
            self.shared.received.value = n


class DoneWatch:
    """Decides when a receiver is done: the sender finished and all it sent arrived, arrivals
    stopped after the sender finished, or the deadline (a perf_counter time) passed."""

    def __init__(self, counter: Counter, shared: Shared, deadline: float) -> None:
        self.counter = counter
        self.shared = shared
        self.deadline = deadline
        self.seen = -1
        self.since = time.perf_counter()

    def done(self) -> bool:
        """Check once; call it every few milliseconds."""
        now = time.perf_counter()
        n = self.counter.n
        sent = self.shared.sent.value
        if sent >= 0 and n >= sent:
            return True
        if n != self.seen:
            self.seen, self.since = n, now
        elif sent >= 0 and now - self.since > IDLE_AFTER_SENDER:
            return True
        return now > self.deadline


async def wait_done(counter: Counter, shared: Shared, deadline: float) -> None:
    """Return once :class:`DoneWatch` says the receiver is done."""
    watch = DoneWatch(counter, shared, deadline)
    while True:
        await asyncio.sleep(0.005)
        if watch.done():
            return


async def wait_stop(shared: Shared, deadline: float) -> None:
    """Serve until the parent sets ``shared.stop`` or ``deadline`` passes."""
    # Another process sets the flag: shared memory cannot wake an asyncio.Event, so poll.
    while not shared.stop.value and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def receiver_report(counter: Counter, shared: Shared, **extra: Any) -> dict[str, Any]:
    """The receiver's result: how many arrived, and when the last one did."""
    shared.received.value = counter.n
    return {"received": counter.n, "t_last": counter.last, "rss_kib": rss_kib(), **extra}


class Paced:
    """The send pacing both raw and distro senders use, and the sender's count/time bound.

    ``burst`` messages are sent back to back, then the sender yields to its event loop once
    (``await asyncio.sleep(0)``). With ``window`` set, the sender also waits while it is more
    than ``window`` messages ahead of what the receiver has counted (a credit window over shared
    memory, the same for every implementation: it measures the rate the receiver sustains
    without overrunning its socket buffer). The loop every sender runs is::

        paced.start()
        n = 0
        while n < count:
            send(build(n))
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        paced.finish(n)
    """

    __slots__ = ("burst", "seconds", "shared", "stop_at", "window")

    def __init__(self, shared: Shared, params: dict[str, Any]) -> None:
        self.shared = shared
        self.burst: int = params.get("burst", 64)
        self.window: int | None = params.get("window")
        self.seconds: float = params["seconds"]
        self.stop_at = 0.0

    def start(self) -> None:
        """Stamp the start, just before the first message is built."""
        now = time.perf_counter()
        self.shared.t0.value = now
        self.stop_at = now + self.seconds

    async def pause(self, sent: int) -> bool:
        """Between bursts; returns False once the time bound has passed."""
        await asyncio.sleep(0)
        window = self.window
        if window is not None:
            received = self.shared.received
            limit = time.perf_counter() + 2.0
            while sent - received.value > window and time.perf_counter() < limit:
                # Blocking on purpose: a 20 µs nap, finer than the loop's timer resolution;
                # the sender has nothing else to do while it waits for credit.
                time.sleep(20e-6)  # noqa: ASYNC251
        return time.perf_counter() < self.stop_at

    def finish(self, sent: int) -> dict[str, Any]:
        """Publish the count sent; returns the sender's report."""
        elapsed = time.perf_counter() - self.shared.t0.value
        self.shared.sent.value = sent
        return {"sent": sent, "send_elapsed": elapsed, "t0": self.shared.t0.value}


def run_pair(
    receiver: Callable[..., None],
    sender: Callable[..., None],
    params: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """Run ``receiver`` and ``sender`` in two fresh processes; return both results merged.

    ``receiver(params, shared, results)`` must put ``("ready", address)`` then
    ``("receiver", dict)``; ``sender(params, address, shared, results)`` puts ``("sender", dict)``.
    Server-style receivers (request/reply) return when ``shared.stop`` is set.

    :raises RuntimeError: a side failed, or the scenario overran ``timeout`` seconds.
    """
    shared = Shared()
    results: Any = _CTX.Queue()
    procs: list[Any] = []
    got: dict[str, Any] = {}
    stash: dict[str, Any] = {}
    try:
        receiver_cpu, sender_cpu = _cpus(params)
        rproc = _CTX.Process(
            target=_guard, args=(receiver, (params, shared, results), results, receiver_cpu)
        )
        rproc.start()
        procs.append(rproc)
        address = _expect(results, "ready", 30.0, procs, stash)
        sproc = _CTX.Process(
            target=_guard, args=(sender, (params, address, shared, results), results, sender_cpu)
        )
        sproc.start()
        procs.append(sproc)
        deadline = time.monotonic() + timeout
        got.update(_expect(results, "sender", max(1.0, deadline - time.monotonic()), procs, stash))
        if params.get("server"):
            shared.stop.value = 1
        got.update(
            _expect(results, "receiver", max(1.0, deadline - time.monotonic()), procs, stash)
        )
        return got
    finally:
        shared.stop.value = 1
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()  # only the processes this call started
                proc.join(5.0)


def _expect(
    results: Any, kind: str, timeout: float, procs: list[Any], stash: dict[str, Any]
) -> Any:
    if kind in stash:
        return stash.pop(kind)
    deadline = time.monotonic() + timeout
    while True:
        try:
            tag, value = results.get(timeout=0.2)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {kind}") from None
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a benchmark process exited with {dead[0].exitcode}") from None
            continue
        if tag == "error":
            raise RuntimeError(value)
        if tag == kind:
            return value
        stash[tag] = value


def _cpus(params: dict[str, Any]) -> tuple[int | None, int | None]:
    """The CPUs the receiver and the sender are pinned to: the last and the first allowed one,
    the same for every implementation, so that where the scheduler happens to put two
    ping-ponging processes does not decide a latency; (None, None) when not pinning."""
    if not params.get("pin") or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[-1], allowed[0]


def _guard(
    fn: Callable[..., None], args: tuple[Any, ...], results: Any, cpu: int | None = None
) -> None:
    params = args[0]
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if params.get("loop") == "uvloop":
        # Every asyncio.run of this process (distro's side and the baselines alike) gets a
        # uvloop loop.
        import uvloop

        uvloop.install()
    try:
        if params.get("profile") and params.get("transport"):
            from profiling import run_profiled

            run_profiled(fn, args, params)
        else:
            fn(*args)
    except BaseException as exc:
        import traceback

        results.put(
            (
                "error",
                f"{fn.__module__}.{fn.__name__} in pid {os.getpid()}: "
                + "".join(traceback.format_exception(exc)),
            )
        )
        raise SystemExit(1) from None


def expire(future: asyncio.Future[Any]) -> None:
    """A raw client's request time-out: fail the waiting future (the timer distro uses too)."""
    if not future.done():
        future.set_exception(TimeoutError())


class RawRequests:
    """A raw client's requests, done as a correct client does them (and as distro's does): a
    future per request id in ``pending`` (the receive side resolves it), a 1 s time-out timer,
    the time-outs counted.

    :param send: sends one encoded request.
    :param awaits: ``send`` returns an awaitable to wait for (zmq, redis).
    """

    def __init__(
        self,
        pending: dict[str, asyncio.Future[Any]],
        uri: str,
        reply_to: str,
        send: Callable[[bytes], Any],
        *,
        awaits: bool = False,
    ) -> None:
        self.pending = pending
        self.uri = uri
        self.reply_to = reply_to
        self.send = send
        self.awaits = awaits
        self.timeouts = 0
        self.loop = asyncio.get_running_loop()

    async def request(self, seq: int) -> None:
        """Send request ``seq`` and wait for its reply or its time-out."""
        id, data = raw_request(self.uri, seq, self.reply_to)
        future = self.loop.create_future()
        self.pending[id] = future
        timer = self.loop.call_later(1.0, expire, future)
        try:
            if self.awaits:
                await self.send(data)
            else:
                self.send(data)
            await future
        except TimeoutError:
            self.timeouts += 1
        finally:
            timer.cancel()
            self.pending.pop(id, None)

    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        """The request/reply phases of a scenario (see :func:`rr_phases`)."""
        return await rr_phases(self.request, params, lambda: self.timeouts)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def request_loop(
    request: Callable[[int], Any], count: int, seconds: float, outstanding: int
) -> tuple[int, float, list[float]]:
    """Drive ``request(seq)`` (an awaitable request/reply) from ``outstanding`` workers.

    :returns: requests completed, elapsed seconds, and each round trip in µs.
    """
    rtts: list[float] = []
    done = 0
    next_seq = 0
    clock = time.perf_counter
    stop_at = clock() + seconds

    async def worker() -> None:
        nonlocal done, next_seq
        while next_seq < count and clock() < stop_at:
            seq = next_seq
            next_seq += 1
            started = clock()
            await request(seq)
            rtts.append((clock() - started) * 1e6)
            done += 1

    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(outstanding)))
    return done, clock() - t0, rtts


def rr_report(done: int, elapsed: float, rtts: list[float], **extra: Any) -> dict[str, Any]:
    """Summarise a request loop."""
    rtts.sort()
    return {
        "done": done,
        "elapsed": elapsed,
        "rate": done / elapsed if elapsed > 0 else 0.0,
        "p50": percentile(rtts, 0.50),
        "p99": percentile(rtts, 0.99),
        **extra,
    }


async def rr_phases(
    request: Callable[[int], Any], params: dict[str, Any], lost: Callable[[], int]
) -> dict[str, Any]:
    """Warm up, then one request outstanding (latency), then many (throughput)."""
    await request_loop(request, params["warmup"], 10.0, 1)
    one = rr_report(*await request_loop(request, params["count_rr"], params["seconds"], 1))
    many = rr_report(
        *await request_loop(request, params["count"], params["seconds"], params["outstanding"])
    )
    return {"one": one, "many": many, "lost": lost()}


def socket_buffers(port: int) -> dict[str, int]:
    """SO_RCVBUF and SO_SNDBUF of this process's socket bound to ``port`` (what the kernel
    reports, i.e. doubled), found through ``/proc/self/fd``; empty when there is none."""
    import socket

    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.getsockname()[1] == port:
                return {
                    "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                    "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                }
        except (OSError, IndexError, TypeError):
            pass
        finally:
            sock.close()
    return {}
