"""Python's cost per message over NATS, distro vs raw nats-py, with no socket in the timed part.

    .venv/bin/python bench/nats_cost.py

The wall-clock rates of the nats table are set by how the scheduler shares the cores between a
publisher, a subscriber and nats-server; this measures what each side costs in Python alone,
in one process, best of 5 rounds of 50,000 messages:

* build + encode: ``harness.raw_message`` vs ``distro.message(...).to_bytes()``;
* publisher: ``await nc.publish(subject, raw_message(...))`` vs
  ``await client.send(distro.message(...))`` in a loop that never yields, so that nats-py's
  flusher does not run (a write buffer of 512 MiB; the socket write happens after the timing);
* subscriber: 50,000 ``MSG`` frames handed to the connection's own nats-py parser
  (``_ps.parse``, what its read loop does with what it reads), until the last one was counted:
  a ``nc.subscribe(cb=...)`` coroutine decoding with orjson vs a distro server's POST handler.

Uses nats-py and distro-nats internals (``_ps``, ``_subs``, ``server._listener``): a
measuring tool, not an example. Needs NATS on 127.0.0.1:4222.
"""

from __future__ import annotations

import asyncio
import time

import nats
import orjson
from distro_nats.subjects import message_subject
from harness import NATS_URL, payload, raw_message, unique_uri

import distro_core as distro

N = 50_000
BIG = 512 * 1024 * 1024


def best(xs):
    return min(xs) / N * 1e6


async def sender_raw(uri, subj):
    nc = await nats.connect(NATS_URL, pending_size=BIG)
    out = []
    for _ in range(5):
        publish = nc.publish
        t = time.perf_counter()
        for n in range(N):
            await publish(subj, raw_message(uri, n))
        out.append(time.perf_counter() - t)
        await nc.flush()
    await nc.close()
    return best(out)


async def sender_distro(uri, prefix):
    factory = distro.create("nats")
    out = []
    async with factory.client(url=NATS_URL, prefix=prefix, pending_size=BIG) as client:
        send, message = client.send, distro.message
        headers = {"uri": uri, "verb": "POST"}
        for _ in range(5):
            t = time.perf_counter()
            for n in range(N):
                await send(message(headers, payload(n)))
            out.append(time.perf_counter() - t)
            await asyncio.sleep(0.3)
    return best(out)


def build_only():
    uri = "/bench/x"
    headers = {"uri": uri, "verb": "POST"}
    r, d = [], []
    for _ in range(5):
        t = time.perf_counter()
        for n in range(N):
            raw_message(uri, n)
        r.append(time.perf_counter() - t)
        t = time.perf_counter()
        for n in range(N):
            distro.message(headers, payload(n)).to_bytes()
        d.append(time.perf_counter() - t)
    return best(r), best(d)


def frames(subject, sid, uri):
    parts = []
    for n in range(N):
        data = raw_message(uri, n)
        parts.append(b"MSG %s %d %d\r\n%s\r\n" % (subject.encode(), sid, len(data), data))
    return b"".join(parts)


async def receiver_raw(uri, subj):
    nc = await nats.connect(NATS_URL)
    count = 0

    async def on_msg(msg):
        nonlocal count
        orjson.loads(msg.data)
        count += 1

    sub = await nc.subscribe(subj, cb=on_msg)
    blob = frames(subj, sub._id, uri)
    out = []
    for _ in range(5):
        target = count + N
        t = time.perf_counter()
        await nc._ps.parse(blob)
        limit = time.perf_counter() + 30
        while count < target and time.perf_counter() < limit:  # noqa: ASYNC110
            await asyncio.sleep(0)  # the callbacks run in nats-py's subscription task
        out.append(time.perf_counter() - t)
    await nc.close()
    return best(out)


async def receiver_distro(uri, prefix):
    factory = distro.create("nats")
    server = factory.server(url=NATS_URL, prefix=prefix)
    count = 0

    @server.post(uri)
    def on_message(msg):
        nonlocal count
        count += 1

    async with server:
        link = server._listener.link
        subject = message_subject(prefix, uri, "POST")
        sid = next(s for s, sub in link._subs.items() if sub.subject == subject)
        blob = frames(subject, sid, uri)
        out = []
        for _ in range(5):
            target = count + N
            t = time.perf_counter()
            await link._ps.parse(blob)
            limit = time.perf_counter() + 30
            while count < target and time.perf_counter() < limit:  # noqa: ASYNC110
                await asyncio.sleep(0)
            out.append(time.perf_counter() - t)
    return best(out)


async def main():
    import logging

    logging.disable(logging.WARNING)  # the sends reach no subscriber: 'unheard' warnings
    uri = unique_uri("bench")
    prefix = "micro" + uri.split("/")[2]
    subj = "bench." + uri.split("/")[2]
    rb, db = build_only()
    print(f"build+encode one message: raw {rb:.2f} µs, distro {db:.2f} µs")
    print(
        f"publisher, per message (no socket): raw {await sender_raw(uri, subj):.2f} µs, "
        f"distro {await sender_distro(uri, prefix):.2f} µs"
    )
    print(
        f"subscriber, per message (parser fed): raw {await receiver_raw(uri, subj):.2f} µs, "
        f"distro {await receiver_distro(uri, prefix):.2f} µs"
    )


if __name__ == "__main__":
    asyncio.run(main())
