"""Raw UDP baselines: asyncio ``DatagramProtocol`` and orjson, doing the work distro does.

One-way: the sender builds each message (``str(uuid.uuid4())``, orjson) and ``sendto``s it;
the receiver decodes every datagram with ``orjson.loads`` and counts it. Request/reply: an echo
server decodes each request and encodes a fresh reply; the client matches replies to waiting
futures by ``inReplyTo``, with a time-out per request as a correct UDP client needs.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson
from harness import (
    Counter,
    Paced,
    RawRequests,
    Shared,
    raw_message,
    raw_reply,
    receiver_report,
    wait_done,
    wait_stop,
)

_loads = orjson.loads


def _family(params: dict[str, Any]) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in params["host"] else socket.AF_INET


def _sock(params: dict[str, Any], bind: bool) -> socket.socket:
    sock = socket.socket(_family(params), socket.SOCK_DGRAM)
    rcvbuf = params.get("rcvbuf")
    if rcvbuf:
        # The same receive buffer the distro transport's socket has (the kernel doubles it).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf // 2)
    if bind:
        sock.bind((params["host"], 0))
    sock.setblocking(False)
    return sock


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, counter: Counter) -> None:
        self.hit = counter.hit

    def datagram_received(self, data: bytes, addr: Any) -> None:
        _loads(data)
        self.hit()


def receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        counter = Counter(shared)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(counter), sock=_sock(params, bind=True)
        )
        try:
            results.put(("ready", transport.get_extra_info("sockname")[:2]))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        finally:
            transport.close()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=tuple(address), family=_family(params)
        )
        uri, count = params["uri"], params["count"]
        sendto = transport.sendto
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            sendto(raw_message(uri, n))
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        transport.close()
        results.put(("sender", report))

    asyncio.run(main())


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(raw_reply(_loads(data)), addr)


def echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Echo, sock=_sock(params, bind=True))
        try:
            results.put(("ready", transport.get_extra_info("sockname")[:2]))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
        finally:
            transport.close()
        results.put(("receiver", {}))

    asyncio.run(main())


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[Any]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = _loads(data)
        future = self.pending.pop(reply["headers"]["inReplyTo"], None)
        if future is not None and not future.done():
            future.set_result(reply)


def client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            _Client, remote_addr=tuple(address), family=_family(params)
        )
        uri = params["uri"]
        pending = proto.pending
        sendto = transport.sendto
        requests = RawRequests(pending, uri, "udp", sendto)
        try:
            return await requests.run(params)
        finally:
            transport.close()

    results.put(("sender", asyncio.run(main())))


# -- tuned: the socket read directly ----------------------------------------------------------
# asyncio's datagram transport reads one datagram per wake-up into a fresh 256 KiB buffer. The
# tuned baseline reads the socket itself (loop.add_reader) and drains every queued datagram per
# wake-up, as distro's udp transport does, so that distro is also compared with the best raw
# asyncio code, not only with the obvious one.

_READ_SIZE = 65536
_MAX_BURST = 256


def _drain(sock: socket.socket, on_datagram: Any) -> Any:
    recvfrom = sock.recvfrom

    def readable() -> None:
        for _ in range(_MAX_BURST):
            try:
                data, addr = recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error reported on the socket: go on reading
            on_datagram(data, addr)

    return readable


def tuned_receiver(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        counter = Counter(shared)
        hit = counter.hit
        sock = _sock(params, bind=True)

        def on_datagram(data: bytes, addr: Any) -> None:
            _loads(data)
            hit()

        loop.add_reader(sock.fileno(), _drain(sock, on_datagram))
        try:
            results.put(("ready", sock.getsockname()[:2]))
            await wait_done(counter, shared, time.perf_counter() + params["timeout"])
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
        results.put(("receiver", receiver_report(counter, shared)))

    asyncio.run(main())


def tuned_sender(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> None:
        sock = _sock(params, bind=False)
        sock.connect(tuple(address))
        send = sock.send
        uri, count = params["uri"], params["count"]
        paced = Paced(shared, params)
        paced.start()
        n = 0
        while n < count:
            data = raw_message(uri, n)
            try:
                send(data)
            except BlockingIOError:
                await asyncio.sleep(0)  # the send buffer is full: let it drain, then retry
                continue
            n += 1
            if not n % paced.burst and not await paced.pause(n):
                break
        report = paced.finish(n)
        sock.close()
        results.put(("sender", report))

    asyncio.run(main())


def tuned_echo_server(params: dict[str, Any], shared: Shared, results: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = _sock(params, bind=True)
        sendto = sock.sendto

        def on_datagram(data: bytes, addr: Any) -> None:
            sendto(raw_reply(_loads(data)), addr)

        loop.add_reader(sock.fileno(), _drain(sock, on_datagram))
        try:
            results.put(("ready", sock.getsockname()[:2]))
            await wait_stop(shared, time.perf_counter() + params["timeout"])
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
        results.put(("receiver", {}))

    asyncio.run(main())


def tuned_client(params: dict[str, Any], address: Any, shared: Shared, results: Any) -> None:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sock = _sock(params, bind=False)
        sock.connect(tuple(address))
        pending: dict[str, asyncio.Future[Any]] = {}

        def on_datagram(data: bytes, addr: Any) -> None:
            reply = _loads(data)
            future = pending.pop(reply["headers"]["inReplyTo"], None)
            if future is not None and not future.done():
                future.set_result(reply)

        loop.add_reader(sock.fileno(), _drain(sock, on_datagram))
        uri = params["uri"]
        send = sock.send
        requests = RawRequests(pending, uri, "udp", send)
        try:
            return await requests.run(params)
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    results.put(("sender", asyncio.run(main())))
