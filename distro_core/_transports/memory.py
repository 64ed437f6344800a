"""The ``memory`` transport: servers and clients in one process, no sockets.

It behaves like the network transports (frames are bytes, delivery is asynchronous and in order,
request/reply and RECEIVED work, a server that falls behind pushes back on its senders), so a
test that passes over ``memory`` exercises the same code paths as one over ``tcp``.

**Networks.** Servers bind numbered ports in a :class:`MemoryNetwork`. Given one as the
``network`` option, a server or client uses it, whatever loop or thread it runs on: that is how
servers and clients on different event loops meet. Without it, each event loop has a network of
its own, so tests (each on a fresh loop) and threads running loops of their own never see each
other's servers:

* a server or client made while an event loop runs belongs to that loop's network (a server
  made in plain code, to the loop it starts on);
* a client made where no loop runs has no loop to belong to. That is the blocking client
  (``factory.sync_client``), whose event loop is a private one in a background thread, used
  from plain code or a worker thread while the server runs on some loop of the process. It
  connects to the server on its port in the network of the loop it connects from, or else in
  the one other loop's network where that port is bound; when servers on several loops share
  the port it raises ``ConnectionError`` asking for an explicit ``network``. Ephemeral ports
  (``port=0``) come from one sequence for the whole process, so that servers on different
  loops rarely share one.

**Bounds.** Like a socket's buffers, every queue is bounded by the ``queue_size`` option (frames,
:data:`QUEUE_SIZE` by default):

* a server's inbound queue (frames sent and not yet handed to the server, including those held
  while the server has paused reading): a sender (``Connection.send``/``request``) that finds
  it full *waits* until the server has taken frames, in the order the senders came, for at
  most ``send_timeout`` seconds (:data:`SEND_TIMEOUT` by default; then ``ConnectionError``,
  as a tcp send to a server that reads nothing);
* a client's reply queue (replies the server sent that the client's loop has not yet taken):
  a reply is a synchronous ``Peer.send`` and cannot wait, so one that finds it full raises
  ``TransportError``, which the server counts in ``stats.dropped["reply_failed"]`` (the request
  then times out on the client). A client only has that many replies queued when it has that
  many requests outstanding and its loop falls behind, which ``max_pending`` prevents.

Frames still queued when a server closes are counted in ``stats.dropped["closing"]``.

**Threads.** Every queue belongs to the event loop of its server or client and is counted
twice over: frames posted from that loop's own thread (the common case) in a counter only that
thread touches, with no lock, and frames posted from other threads (the blocking client) in a
counter under a lock, delivered with ``call_soon_threadsafe``. Waiting senders are queued and
granted room on the server's thread and woken on their own loop the same way. A sender on
another thread checks for room without holding the server's thread back, so senders on several
threads at once may overfill a queue by a frame each.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .._exceptions import AddressInUse, ConnectionError, TransportError
from .._message import Message
from ..transport import (
    API_VERSION,
    Capabilities,
    ClientReceiver,
    Connection,
    DeadLetter,
    FrameInlet,
    Listener,
    Options,
    Peer,
    Receiver,
    Transport,
)
from ._memory_groups import GroupRules, MemoryGroup

__all__ = ["QUEUE_SIZE", "SEND_TIMEOUT", "MemoryNetwork", "MemoryTransport"]

HOST = "memory"

QUEUE_SIZE = 4096
"""The default ``queue_size``: frames a server's inbound queue, or a client's reply queue,
holds before senders wait (or replies fail)."""

SEND_TIMEOUT = 10.0
"""The default ``send_timeout``: seconds a sender waits for room before ``ConnectionError``."""

# One sequence for every network of the process, as one machine has one port table: servers on
# different loops then rarely share a port, which keeps a loopless client's search unambiguous.
_EPHEMERAL = itertools.cycle(range(49152, 65536))


class MemoryNetwork:
    """A table of in-process ports. Pass the same one as the ``network`` option to a server
    and its clients when they run on different event loops (or to isolate a test).

    Servers made with ``group="name"`` on one port form a group there (see
    ``distro_core._transports._memory_groups``); its dead letters stay readable here after
    its last member closed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[int, _MemoryListener | MemoryGroup] = {}
        self._groups: dict[str, MemoryGroup] = {}

    @classmethod
    def current(cls) -> MemoryNetwork:
        """The running event loop's default network (where servers made without ``network=``
        bind).

        :raises RuntimeError: no event loop runs in this thread.
        """
        return _loop_network(asyncio.get_running_loop())

    def dead_letters(self, group: str) -> list[DeadLetter]:
        """The messages ``group`` gave up on, oldest first."""
        found = self._groups.get(group)
        return list(found.dead) if found is not None else []

    def redrive(self, group: str) -> int:
        """Deliver ``group``'s dead letters again, as new messages (their replies go nowhere:
        the requests they were have ended). Call it from the members' event loop.

        :returns: how many were sent again.
        """
        found = self._groups.get(group)
        return found.redrive(_NO_SENDER) if found is not None else 0

    def _bind(self, port: int, listener: _MemoryListener) -> int:
        with self._lock:
            if port == 0:
                for _ in range(16384):
                    candidate = next(_EPHEMERAL)
                    if candidate not in self._listeners:
                        port = candidate
                        break
                else:
                    raise AddressInUse("no free ephemeral memory port")
            elif port in self._listeners:
                bound = self._listeners[port]
                if listener.group is None or not isinstance(bound, MemoryGroup):
                    raise AddressInUse(f"memory port {port} is already bound")
                if bound.name != listener.group:
                    raise AddressInUse(
                        f"memory port {port} is bound by group {bound.name!r}, "
                        f"not {listener.group!r}"
                    )
                bound.members.append(listener)
                return port
            if listener.group is None:
                self._listeners[port] = listener
                return port
            group = self._groups.get(listener.group)
            if group is None or group.port != port or group.members:
                if group is not None and group.members:
                    raise AddressInUse(
                        f"memory group {listener.group!r} serves port {group.port}, not {port}"
                    )
                group = MemoryGroup(listener.group, port, listener.rules)
                self._groups[listener.group] = group
            group.members.append(listener)
            self._listeners[port] = group
            return port

    def _unbind(self, port: int, listener: _MemoryListener) -> None:
        with self._lock:
            bound = self._listeners.get(port)
            if bound is listener:
                del self._listeners[port]
            elif isinstance(bound, MemoryGroup) and listener in bound.members:
                bound.members.remove(listener)
                if not bound.members:
                    del self._listeners[port]  # its dead letters stay in self._groups

    def _lookup(self, port: int) -> _MemoryListener | MemoryGroup | None:
        return self._listeners.get(port)


# The default networks, one per event loop; a loop's goes when the loop is garbage.
_LOOP_NETWORKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MemoryNetwork] = (
    weakref.WeakKeyDictionary()
)
_LOOP_NETWORKS_LOCK = threading.Lock()


def _loop_network(loop: asyncio.AbstractEventLoop) -> MemoryNetwork:
    with _LOOP_NETWORKS_LOCK:
        network = _LOOP_NETWORKS.get(loop)
        if network is None:
            network = _LOOP_NETWORKS[loop] = MemoryNetwork()
        return network


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _search(port: int, here: MemoryNetwork) -> MemoryNetwork:
    """The network a client made outside any event loop connects in (see the module docstring)."""
    if here._lookup(port) is not None:
        return here
    with _LOOP_NETWORKS_LOCK:
        networks = list(_LOOP_NETWORKS.items())
    found = [
        network
        for loop, network in networks
        if network is not here and not loop.is_closed() and network._lookup(port) is not None
    ]
    if len(found) > 1:
        raise ConnectionError(
            f"memory port {port} is bound on {len(found)} event loops; give the server and the "
            "client the same network=MemoryNetwork()"
        )
    return found[0] if found else here


class _Inbox:
    """Frames for one event loop, posted from its own thread or any other, counted until taken.

    ``local`` counts the frames posted from the loop's own thread and is only touched there;
    ``remote`` counts those posted from other threads, under a lock: the common same-thread
    path takes no lock, and neither count can lose an update to the other thread.

    :param take: called on the loop with each frame, in the order posted.
    """

    __slots__ = ("_lock", "_take", "_thread", "local", "loop", "remote")

    def __init__(self, take: Callable[[bytes, Any], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._lock = threading.Lock()
        self._take = take
        self.local = 0
        self.remote = 0

    def here(self) -> bool:
        """Whether the calling thread is the loop's."""
        return threading.get_ident() == self._thread

    def put(self, data: bytes, peer: Any) -> None:
        """Count and post one frame.

        :raises ConnectionError: the inbox's loop is closed.
        """
        if threading.get_ident() == self._thread:
            self.local += 1
            self.loop.call_soon(self._arrive_local, data, peer)
        else:
            self.reserve(False)
            self.post(data, peer, False)

    def reserve(self, local: bool) -> None:
        """Count a frame that :meth:`post` will post (a slot granted to a waiting sender)."""
        if local:
            self.local += 1
        else:
            with self._lock:
                self.remote += 1

    def release(self, local: bool) -> None:
        """Uncount a frame reserved and never posted."""
        if local:
            self.local -= 1
        else:
            with self._lock:
                self.remote -= 1

    def post(self, data: bytes, peer: Any, local: bool) -> None:
        """Post one frame already counted by :meth:`reserve`.

        :raises ConnectionError: the inbox's loop is closed.
        """
        if local:
            self.loop.call_soon(self._arrive_local, data, peer)
            return
        try:
            self.loop.call_soon_threadsafe(self._arrive_remote, data, peer)
        except RuntimeError as exc:  # the loop is closed: nothing will ever take the frame
            self.release(False)
            raise ConnectionError("the memory peer's event loop is closed") from exc

    def _arrive_local(self, data: bytes, peer: Any) -> None:
        self.local -= 1
        self._take(data, peer)

    def _arrive_remote(self, data: bytes, peer: Any) -> None:
        with self._lock:
            self.remote -= 1
        self._take(data, peer)


class _Waiter:
    """A sender waiting for room in a listener's queue, woken on its own loop."""

    __slots__ = ("future", "local", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, local: bool) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.local = local  # on the listener's thread

    def granted(self, listener: _MemoryListener) -> None:
        """On the waiter's loop: a slot was reserved for it."""
        if self.future.done():  # cancelled meanwhile: the slot goes to the next in line
            listener.give_back(self.local)
        else:
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """On the waiter's loop: no slot will come."""
        if not self.future.done():
            self.future.set_exception(exc)

    def owns_a_slot(self) -> bool:
        """Whether it was granted a slot it has not used (it was cancelled just after)."""
        future = self.future
        return future.done() and not future.cancelled() and future.exception() is None


class _MemoryPeer(Peer):
    __slots__ = ("_conn",)

    def __init__(self, conn: _MemoryConnection) -> None:
        super().__init__(HOST)
        self._conn = conn

    def send(self, data: bytes, reply_to: str) -> None:
        self._conn._reply(data)


class _NoSender(Peer):
    """The sender of a redriven dead letter: nobody waits for its reply any more."""

    def send(self, data: bytes, reply_to: str) -> None:
        raise TransportError("a redriven dead letter's sender has gone; its reply is dropped")


_NO_SENDER = _NoSender(HOST)


class _MemoryListener(Listener):
    def __init__(
        self,
        network: MemoryNetwork,
        port: int,
        receiver: Receiver,
        queue_size: int,
        group: str | None = None,
        rules: GroupRules | None = None,
    ) -> None:
        self.group = group
        self.rules = rules or GroupRules()
        self._network = network
        self._receiver = receiver
        self._inlet = FrameInlet(receiver)
        self.inbox = _Inbox(self._take)
        self._size = queue_size
        # Senders waiting for room, first come first served; only touched on the inbox's loop.
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self.address = (HOST, network._bind(port, self))

    @property
    def serving(self) -> bool:
        """Whether it takes frames now (open and not paused): where a group sends first."""
        return not self._closed and not self._inlet.paused

    def offer(self, data: bytes, peer: Peer) -> bool:
        """Queue ``data`` if there is room and nobody waits for it; from any thread.

        :returns: False when the sender must wait (:meth:`enlist`) instead.
        """
        inbox = self.inbox
        if self._waiters or inbox.local + inbox.remote + self._inlet.held >= self._size:
            return False
        inbox.put(data, peer)
        return True

    def enlist(self, waiter: _Waiter) -> None:
        """Queue ``waiter`` for a slot (its future is set when it has one); from any thread.

        :raises ConnectionError: the listener's loop is closed.
        """
        if waiter.local:
            self._enlist(waiter)
            return
        try:
            self.inbox.loop.call_soon_threadsafe(self._enlist, waiter)
        except RuntimeError as exc:
            raise ConnectionError("the memory server's event loop is closed") from exc

    def _enlist(self, waiter: _Waiter) -> None:
        if self._closed:
            self._fail(waiter, ConnectionError(f"memory port {self.address[1]} closed"))
            return
        self._waiters.append(waiter)
        self._grant()

    def _grant(self) -> None:
        """Reserve slots for the senders waiting, in order, while there is room."""
        waiters = self._waiters
        inbox = self.inbox
        inlet = self._inlet
        while waiters and inbox.local + inbox.remote + inlet.held < self._size:
            waiter = waiters.popleft()
            if waiter.local:
                if not waiter.future.done():  # else it was cancelled while waiting
                    inbox.reserve(True)
                    waiter.future.set_result(None)
                continue
            inbox.reserve(False)
            try:
                waiter.loop.call_soon_threadsafe(waiter.granted, self)
            except RuntimeError:  # the sender's loop is closed
                inbox.release(False)

    def give_back(self, local: bool) -> None:
        """Return a slot reserved for a sender that will not use it; from the sender's thread."""
        self.inbox.release(local)
        if local:
            self._grant()
            return
        try:
            self.inbox.loop.call_soon_threadsafe(self._grant)
        except RuntimeError:
            pass  # the listener's loop is closed: nobody is waiting on it any more

    def _fail(self, waiter: _Waiter, exc: BaseException) -> None:
        if waiter.local:
            waiter.fail(exc)
            return
        try:
            waiter.loop.call_soon_threadsafe(waiter.fail, exc)
        except RuntimeError:
            pass  # the sender's loop is closed: nobody awaits the future

    def _take(self, data: bytes, peer: Peer) -> None:
        if self._closed:
            self._receiver.frame_dropped(
                "closing", f"memory port {self.address[1]} closed with a frame on its way"
            )
            return
        self._inlet.deliver(data, peer)
        if self._waiters:
            self._grant()

    def pause_reading(self) -> None:
        self._inlet.pause()

    def resume_reading(self) -> None:
        if self._closed:
            return
        self._inlet.resume()
        if self._waiters:
            self._grant()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network._unbind(self.address[1], self)
        discarded = self._inlet.close()
        for _ in range(discarded):  # one count per frame, as for any other drop
            self._receiver.frame_dropped(
                "closing", f"memory port {self.address[1]} closed holding {discarded} frame(s)"
            )
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            self._fail(waiter, ConnectionError(f"memory port {self.address[1]} closed"))


class _MemoryConnection(Connection):
    _ids = itertools.count(1)

    def __init__(
        self,
        network: MemoryNetwork,
        port: int,
        receiver: ClientReceiver,
        queue_size: int,
        send_timeout: float,
    ) -> None:
        self._network = network
        self._port = port
        self._receiver = receiver
        self._inbox = _Inbox(self._take)
        self._size = queue_size
        self._send_timeout = send_timeout
        # Sends of this connection that found no room, and the lock that makes them post in
        # the order they started (a waiter granted room may resume after a later one).
        self._waiting = 0
        self._in_turn = asyncio.Lock()
        self._closed = False
        self._peer = _MemoryPeer(self)
        self.reply_to = f"memory:{next(self._ids)}"

    async def send(self, data: bytes, message: Message) -> None:
        if self._closed:
            raise ConnectionError("memory connection is closed")
        bound = self._network._lookup(self._port)
        if bound is None:
            raise ConnectionError(f"nothing listens on memory port {self._port}")
        peer: Peer = self._peer
        if type(bound) is MemoryGroup:  # one member gets it, with a peer that settles
            listener = bound.pick()
            peer = bound.first_delivery(peer, data)
        else:
            listener = bound  # type: ignore[assignment]  # the common case, tested by type()
        if self._waiting or not listener.offer(data, peer):
            await self._send_when_room(listener, data, peer)

    async def _send_when_room(self, listener: _MemoryListener, data: bytes, peer: Peer) -> None:
        local = listener.inbox.here()
        loop = self._inbox.loop
        waiter = _Waiter(loop, local)
        stalled = ConnectionError(
            f"memory port {self._port} took no frames for {self._send_timeout:g}s "
            "(send_timeout); the server is stalled or overloaded"
        )
        self._waiting += 1
        try:
            async with self._in_turn:
                timer = loop.call_later(self._send_timeout, waiter.fail, stalled)
                try:
                    listener.enlist(waiter)
                    await waiter.future
                except asyncio.CancelledError:
                    if waiter.owns_a_slot():  # granted just before the cancellation
                        listener.give_back(local)
                    raise
                finally:
                    timer.cancel()
                listener.inbox.post(data, peer, local)
        finally:
            self._waiting -= 1

    def _reply(self, data: bytes) -> None:
        # Called by the server's Peer.send, on the server's thread: it cannot wait.
        if self._closed:
            raise ConnectionError(f"memory client {self.reply_to} is closed")
        inbox = self._inbox
        if inbox.local + inbox.remote >= self._size:
            raise TransportError(
                f"memory client {self.reply_to} has {self._size} replies it has not taken yet "
                "(its queue_size); this one is dropped"
            )
        inbox.put(data, None)

    def _take(self, data: bytes, peer: object) -> None:
        if not self._closed:
            self._receiver.frame_received(data)

    async def aclose(self) -> None:
        self._closed = True


def _check_network(value: object) -> MemoryNetwork | None:
    if value is not None and not isinstance(value, MemoryNetwork):
        raise TypeError(f"must be a MemoryNetwork, got {type(value).__name__}")
    return value


class MemoryTransport(Transport):
    """In-process transport. Options: ``address`` (``"memory"``, the default), ``port``
    (0 picks a free one for a server; a client names the server's), ``network`` (a
    :class:`MemoryNetwork` shared by servers and clients on different event loops; by default
    one per event loop, see the module docstring) and ``queue_size`` (frames a server's
    inbound queue holds before senders wait, and a client's reply queue before replies are
    dropped; :data:`QUEUE_SIZE` by default) and ``send_timeout`` (seconds a sender waits for
    room before ``ConnectionError``; :data:`SEND_TIMEOUT` by default). Servers made with
    ``group`` (a name) on one port share its messages, one member each, with redelivery:
    ``max_deliveries`` (5), ``redelivery_delay`` (0.1 s) and ``dead_letters`` kept per group
    (1000); see :class:`MemoryNetwork` and ``_memory_groups``.

    :ivar network: the network it binds or connects in; None until it is known (made where no
        event loop runs).
    """

    name = "memory"
    capabilities = Capabilities(cross_process=False, groups=True, redelivery=True)

    api_version = API_VERSION

    def __init__(
        self,
        port: int = 0,
        network: MemoryNetwork | None = None,
        queue_size: int = QUEUE_SIZE,
        send_timeout: float = SEND_TIMEOUT,
        group: str | None = None,
        rules: GroupRules | None = None,
        *,
        options: Mapping[str, Any],
    ) -> None:
        self.group = group
        self.rules = rules or GroupRules()
        self.port = port
        self.network = network
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MemoryTransport:
        """Read ``address``, ``port``, ``network``, ``queue_size`` and ``send_timeout`` (see the
        class docstring); without ``network``, take the running event loop's, if one runs here."""
        opts = Options(cls.name, options)
        address = opts.get("address", HOST)
        if address != HOST:
            raise ValueError(f"memory transport address must be {HOST!r}, got {address!r}")
        port = opts.port()
        network = opts.get("network", None, _check_network)
        queue_size = opts.integer("queue_size", QUEUE_SIZE, minimum=1)
        send_timeout = opts.number("send_timeout", SEND_TIMEOUT, positive=True)
        group = opts.optional_string("group")
        defaults = GroupRules()
        rules = GroupRules(
            opts.integer("max_deliveries", defaults.max_deliveries, minimum=1),
            opts.number("redelivery_delay", defaults.redelivery_delay, minimum=0),
            opts.integer("dead_letters", defaults.dead_letters, minimum=0),
        )
        if network is None:
            loop = _running_loop()
            if loop is not None:
                network = _loop_network(loop)
        return cls(port, network, queue_size, send_timeout, group, rules, options=opts.finish())

    async def listen(self, receiver: Receiver) -> Listener:
        if self.network is None:  # made in plain code: it belongs to the loop it serves on
            self.network = _loop_network(asyncio.get_running_loop())
        return _MemoryListener(
            self.network, self.port, receiver, self.queue_size, self.group, self.rules
        )

    async def connect(
        self, receiver: ClientReceiver, target: tuple[str, int] | None = None
    ) -> Connection:
        port = self.port if target is None else target[1]
        if port == 0:
            raise ValueError("a memory client needs the server's port")
        network = self.network
        if network is None:
            network = _search(port, _loop_network(asyncio.get_running_loop()))
        return _MemoryConnection(network, port, receiver, self.queue_size, self.send_timeout)
