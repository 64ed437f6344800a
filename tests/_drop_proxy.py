"""A lossy UDP proxy on loopback, for the confirmed-send fault tests.

:class:`DropProxy` listens on ``127.0.0.1`` (an ephemeral port) and forwards each datagram a
client sends it to the server, through a socket of its own per client (so that the server's
replies come back to it), and each datagram the server sends back to that client. A seeded
random generator drops ``drop`` of the datagrams in EACH direction; what was forwarded and what
was dropped is counted per direction. Loopback only; everything is closed by :meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

__all__ = ["DropProxy"]

Address = tuple[str, int]


class _Upstream(asyncio.DatagramProtocol):
    """The proxy's socket towards the server for one client: what comes back goes to it."""

    def __init__(self, proxy: DropProxy, client: Address) -> None:
        self.proxy = proxy
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy._down(data, self.client)


class _Front(asyncio.DatagramProtocol):
    """The proxy's listening socket: datagrams from clients."""

    def __init__(self, proxy: DropProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy._up(data, (addr[0], addr[1]))


class DropProxy:
    """Forwards datagrams between clients and ``server`` and drops a seeded share of them.

    :param server: the server's ``(host, port)`` on loopback.
    :param drop: the share of datagrams dropped in each direction (0 to 1).
    :param seed: the seed of the random generator that decides which.

    :ivar forwarded_up, dropped_up: datagrams from clients to the server.
    :ivar forwarded_down, dropped_down: datagrams from the server to clients.
    """

    def __init__(self, server: Address, drop: float = 0.1, seed: int = 1) -> None:
        if server[0] not in ("127.0.0.1", "localhost"):
            raise ValueError("the drop proxy forwards to loopback only")
        self.server = server
        self.drop = drop
        self._random = random.Random(seed)
        self.forwarded_up = 0
        self.dropped_up = 0
        self.forwarded_down = 0
        self.dropped_down = 0
        self._front: asyncio.DatagramTransport | None = None
        self._pending: dict[Address, list[bytes]] = {}
        self._upstreams: dict[Address, _Upstream] = {}

    @property
    def address(self) -> Address:
        """Where clients send to: ``("127.0.0.1", port)``."""
        assert self._front is not None, "start() the proxy first"
        host, port = self._front.get_extra_info("sockname")[:2]
        return host, port

    async def start(self) -> DropProxy:
        """Bind the listening socket."""
        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(
            lambda: _Front(self), local_addr=("127.0.0.1", 0)
        )
        return self

    async def aclose(self) -> None:
        """Close every socket of the proxy."""
        for upstream in self._upstreams.values():
            if upstream.transport is not None:
                upstream.transport.close()
        self._upstreams.clear()
        if self._front is not None:
            self._front.close()
            self._front = None

    async def __aenter__(self) -> DropProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def counts(self) -> dict[str, int]:
        """The counters, by name."""
        return {
            "forwarded_up": self.forwarded_up,
            "dropped_up": self.dropped_up,
            "forwarded_down": self.forwarded_down,
            "dropped_down": self.dropped_down,
        }

    def _dropped(self) -> bool:
        return self._random.random() < self.drop

    def _up(self, data: bytes, client: Address) -> None:
        if self._dropped():
            self.dropped_up += 1
            return
        self.forwarded_up += 1
        upstream = self._upstreams.get(client)
        if upstream is not None and upstream.transport is not None:
            upstream.transport.sendto(data)
            return
        # The first datagram of a client: open its socket towards the server, then send.
        waiting = self._pending.get(client)
        if waiting is not None:
            waiting.append(data)
            return
        self._pending[client] = [data]
        asyncio.get_running_loop().create_task(self._open(client))

    async def _open(self, client: Address) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, client), remote_addr=self.server
        )
        self._upstreams[client] = protocol
        assert protocol.transport is not None
        for data in self._pending.pop(client, []):
            protocol.transport.sendto(data)

    def _down(self, data: bytes, client: Address) -> None:
        if self._dropped():
            self.dropped_down += 1
            return
        self.forwarded_down += 1
        if self._front is not None:
            self._front.sendto(data, client)
