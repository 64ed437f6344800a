"""The ``memory`` transport: servers and clients in one process, no sockets.

It behaves like the network transports (frames are bytes, delivery is asynchronous and in order,
request/reply and RECEIVED work), so a test that passes over ``memory`` exercises the same code
paths as one over ``tcp``. Servers bind numbered ports in a :class:`MemoryNetwork`; by default all
share one per process, as sockets share the machine's port table. Works across event loops and
threads (the blocking client runs its own loop).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from .._exceptions import AddressInUse, ConnectionError
from .._message import Message
from ..transport import (
    API_VERSION,
    Capabilities,
    ClientReceiver,
    Connection,
    Listener,
    Options,
    Peer,
    Receiver,
    Transport,
)

__all__ = ["MemoryNetwork", "MemoryTransport"]

HOST = "memory"


class MemoryNetwork:
    """A table of in-process ports. Pass one as the ``network`` option to isolate a test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, _MemoryListener] = {}
        self._ephemeral = itertools.cycle(range(49152, 65536))

    def _bind(self, port: int, listener: _MemoryListener) -> int:
        with self._lock:
            if port == 0:
                for _ in range(16384):
                    candidate = next(self._ephemeral)
                    if candidate not in self._listeners:
                        port = candidate
                        break
                else:
                    raise AddressInUse("no free ephemeral memory port")
            elif port in self._listeners:
                raise AddressInUse(f"memory port {port} is already bound")
            self._listeners[port] = listener
            return port

    def _unbind(self, port: int, listener: _MemoryListener) -> None:
        with self._lock:
            if self._listeners.get(port) is listener:
                del self._listeners[port]

    def _lookup(self, port: int) -> _MemoryListener | None:
        return self._listeners.get(port)


DEFAULT_NETWORK = MemoryNetwork()


class _Inbox:
    """Runs callbacks on the event loop that made it, from that loop's thread or any other."""

    __slots__ = ("_loop", "_thread")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def put(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` soon on the inbox's loop."""
        if threading.get_ident() == self._thread:
            self._loop.call_soon(callback, *args)
        else:  # a blocking client's loop runs in another thread
            self._loop.call_soon_threadsafe(callback, *args)


class _MemoryPeer(Peer):
    __slots__ = ("_conn",)

    def __init__(self, conn: _MemoryConnection) -> None:
        super().__init__(HOST)
        self._conn = conn

    def send(self, data: bytes, reply_to: str) -> None:
        self._conn._deliver(data)


class _MemoryListener(Listener):
    def __init__(self, network: MemoryNetwork, port: int, receiver: Receiver) -> None:
        self._network = network
        self._receiver = receiver
        self._inbox = _Inbox()
        self._paused = False
        self._held: deque[tuple[bytes, Peer]] = deque()
        self._closed = False
        self.address = (HOST, network._bind(port, self))

    def _deliver(self, data: bytes, peer: Peer) -> None:
        self._inbox.put(self._arrive, data, peer)

    def _arrive(self, data: bytes, peer: Peer) -> None:
        if self._closed:
            return
        if self._paused:
            self._held.append((data, peer))
        else:
            self._receiver.frame_received(data, peer)

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        while self._held and not self._paused and not self._closed:
            data, peer = self._held.popleft()
            self._receiver.frame_received(data, peer)

    async def aclose(self) -> None:
        self._closed = True
        self._held.clear()
        self._network._unbind(self.address[1], self)


class _MemoryConnection(Connection):
    _ids = itertools.count(1)

    def __init__(self, network: MemoryNetwork, port: int, receiver: ClientReceiver) -> None:
        self._network = network
        self._port = port
        self._receiver = receiver
        self._inbox = _Inbox()
        self._closed = False
        self._peer = _MemoryPeer(self)
        self.reply_to = f"memory:{next(self._ids)}"

    async def send(self, data: bytes, message: Message) -> None:
        if self._closed:
            raise ConnectionError("memory connection is closed")
        listener = self._network._lookup(self._port)
        if listener is None:
            raise ConnectionError(f"nothing listens on memory port {self._port}")
        listener._deliver(data, self._peer)

    def _deliver(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError(f"memory client {self.reply_to} is closed")
        self._inbox.put(self._arrive, data)

    def _arrive(self, data: bytes) -> None:
        if not self._closed:
            self._receiver.frame_received(data)

    async def aclose(self) -> None:
        self._closed = True


class MemoryTransport(Transport):
    """In-process transport. Options: ``address`` (``"memory"``, the default), ``port``
    (0 picks a free one for a server; a client names the server's) and ``network`` (a
    :class:`MemoryNetwork`; one per process by default)."""

    name = "memory"
    capabilities = Capabilities(cross_process=False)

    api_version = API_VERSION

    def __init__(
        self, port: int = 0, network: MemoryNetwork | None = None, *, options: Mapping[str, Any]
    ) -> None:
        self.port = port
        self.network = DEFAULT_NETWORK if network is None else network
        self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MemoryTransport:
        """Read ``address``, ``port`` and ``network`` (see the class docstring)."""
        opts = Options(cls.name, options)
        address = opts.get("address", HOST)
        if address != HOST:
            raise ValueError(f"memory transport address must be {HOST!r}, got {address!r}")
        port = opts.port()
        network = opts.instance("network", DEFAULT_NETWORK, MemoryNetwork)
        return cls(port, network, options=opts.finish())

    async def listen(self, receiver: Receiver) -> Listener:
        return _MemoryListener(self.network, self.port, receiver)

    async def connect(
        self, receiver: ClientReceiver, target: tuple[str, int] | None = None
    ) -> Connection:
        port = self.port if target is None else target[1]
        if port == 0:
            raise ValueError("a memory client needs the server's port")
        return _MemoryConnection(self.network, port, receiver)
