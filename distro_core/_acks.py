"""RECEIVED acknowledgements: where a server may send them, and the links it sends them on.

By default an acknowledgement goes only to the address the message came from (a header naming
another host would turn a server into a reflector aimed at third parties; docs/security.md).

Acknowledging never holds a server back: each one runs as a task of its own, apart from the
handlers (it takes no ``max_concurrency`` slot), bounded in time (:data:`ACK_TIMEOUT` for the
name lookup, the connection and the write together) and in number (:data:`MAX_IN_FLIGHT`;
past it an acknowledgement is dropped at once and counted ``ack_overload``). What it holds is
bounded too: at most :data:`MAX_LINKS` links (the oldest is closed first; concurrent first
acknowledgements to one target share one connection attempt), and a cache of at most
:data:`MAX_RESOLVED` looked-up names, each at most 253 characters (a DNS name's limit).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Callable

from . import _protocol
from ._exceptions import DistroError
from ._message import Message
from ._transport import Connection, Peer, RequestFailure, Transport

__all__ = ["ACK_TIMEOUT", "MAX_IN_FLIGHT", "MAX_LINKS", "MAX_RESOLVED", "Acknowledger"]

MAX_LINKS = 64
"""Links to acknowledgement targets kept open at once."""
MAX_RESOLVED = 1024
"""Host names whose addresses are remembered."""
MAX_NAME = 253
"""The longest host name looked up (longer ones are refused without a lookup)."""
MAX_LOOKUPS = 4
"""Name lookups running at once (the default executor has few threads: handlers' own
``run_in_executor`` calls must not wait behind lookups an attacker asked for)."""
ACK_TIMEOUT = 2.0
"""Seconds one acknowledgement may take: lookup, connection and write together."""
MAX_IN_FLIGHT = 256
"""Acknowledgements being sent at once; one more is dropped and counted ``ack_overload``."""

Failure = tuple[str, str]
"""``(reason, detail)`` for the server's drop count."""


class _Sink:
    """Receiver for acknowledgement links: nothing is expected back on them."""

    def frame_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def request_failed(self, request_id: str, failure: RequestFailure, detail: str) -> None:
        pass

    def unheard(self, detail: str) -> None:
        pass


class Acknowledger:
    """Sends the RECEIVED acknowledgements of one server over its transport.

    :param transport: the server's transport; acknowledgements use its ``connect(target=...)``.
    :param any_address: send to whatever ``address`` a header names, not only the sender's.
    :param report: called with the outcome of each acknowledgement started by :meth:`submit`
        (None when sent, else a :data:`Failure`).
    :param timeout: seconds one acknowledgement may take.
    :param max_in_flight: acknowledgements in progress at once.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        any_address: bool,
        report: Callable[[Failure | None], None] | None = None,
        timeout: float = ACK_TIMEOUT,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._transport = transport
        self._any_address = any_address
        self._report = report
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: dict[tuple[str, int], Connection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Task[Connection]] = {}
        self._closers: set[asyncio.Task[None]] = set()
        self._resolved: dict[str, frozenset[str]] = {}
        self._lookups: asyncio.Semaphore | None = None
        self._closed = False
        self.outgoing: Callable[[bytes], bytes | None] | None = None
        """Set by the server's middleware: every RECEIVED frame goes through it (signed);
        None from it: not sent."""

    @property
    def in_flight(self) -> int:
        """Acknowledgements started by :meth:`submit` and not finished."""
        return len(self._tasks)

    def submit(self, msg: Message, target: tuple[str, int], peer: Peer) -> Failure | None:
        """Start acknowledging ``msg`` in the background; never waits.

        :returns: a :data:`Failure` at once when it cannot start (too many in flight, or the
            server is closing); None when started (its outcome goes to ``report``).
        """
        if self._closed:
            return "ack_failed", f"RECEIVED for {msg.id}: the server is closing"
        if len(self._tasks) >= self._max_in_flight:
            return (
                "ack_overload",
                f"RECEIVED for {msg.id}: {len(self._tasks)} acknowledgements in flight",
            )
        task = asyncio.get_running_loop().create_task(self._bounded(msg, target, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _bounded(self, msg: Message, target: tuple[str, int], peer: Peer) -> None:
        try:
            failure = await asyncio.wait_for(self.send(msg, target, peer), self._timeout)
        except asyncio.TimeoutError:
            failure = (
                "ack_timeout",
                f"RECEIVED for {msg.id} to {_where(target)}: not sent within {self._timeout:g}s",
            )
        if self._report is not None:
            self._report(failure)

    async def send(self, msg: Message, target: tuple[str, int], peer: Peer) -> Failure | None:
        """Acknowledge ``msg`` to ``target`` now (unbounded in time: :meth:`submit` bounds it).

        :returns: None when sent, else a :data:`Failure`.
        """
        host = target[0]
        if not isinstance(host, str) or not host or len(host) > MAX_NAME:
            return "ack_refused", f"message {msg.id} names no usable RECEIVED address"
        if not self._any_address and not await self._is_sender(host, peer.host):
            return (
                "ack_refused",
                f"message {msg.id} asks for RECEIVED at {_where(target)}, which is not its "
                f"sender ({peer.host}); pass ack_any_address=True to allow it",
            )
        ack = _protocol.received(msg.id)
        data = ack.to_bytes()
        if self.outgoing is not None:
            signed = self.outgoing(data)
            if signed is None:
                return "ack_failed", f"RECEIVED for {msg.id}: a middleware failed on it"
            data = signed
        try:
            link = self._links.get(target)
            if link is None:
                link = await self._connect(target)
            await link.send(data, ack)
        except DistroError as exc:
            failed = self._links.pop(target, None)
            if failed is not None:
                self._close_later(failed)
            return "ack_failed", f"RECEIVED for {msg.id} to {_where(target)}: {exc}"
        return None

    async def _connect(self, target: tuple[str, int]) -> Connection:
        """The link to ``target``: one connection attempt however many acknowledgements wait
        for it, and the oldest link closed when there are too many.

        The attempt runs in a task of its own, which no acknowledgement's time-out cancels
        (the transport bounds it with its own connect time-out): a cancelled attempt would end
        every other waiter with a CancelledError of its own, uncounted."""
        attempt = self._connecting.get(target)
        if attempt is None:
            attempt = asyncio.get_running_loop().create_task(
                self._transport.connect(_Sink(), target)
            )
            self._connecting[target] = attempt
            attempt.add_done_callback(functools.partial(self._connected, target))
        return await asyncio.shield(attempt)

    def _connected(self, target: tuple[str, int], attempt: asyncio.Task[Connection]) -> None:
        """A connection attempt ended: keep the link (closing the oldest past MAX_LINKS)."""
        del self._connecting[target]
        if attempt.cancelled() or attempt.exception() is not None:
            return  # each waiter got the error (retrieved here: nobody need be waiting)
        link = attempt.result()
        if self._closed:
            self._close_later(link)
            return
        while len(self._links) >= MAX_LINKS:
            self._close_later(self._links.pop(next(iter(self._links))))
        self._links[target] = link

    def _close_later(self, link: Connection) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(link))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def aclose(self) -> None:
        """Stop acknowledging (in-flight acknowledgements are cancelled) and close every link."""
        self._closed = True
        for attempt in list(self._connecting.values()):
            attempt.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._timeout)
        links, self._links = list(self._links.values()), {}
        for link in links:
            await _close_quietly(link)
        if self._closers:
            await asyncio.wait(set(self._closers), timeout=self._timeout)

    async def _is_sender(self, host: str, sender: str | None) -> bool:
        if sender is None:
            return False
        if host == sender:
            return True
        canonical = normalise(host)
        if _is_ip(canonical):
            return canonical == normalise(sender)
        addresses = self._resolved.get(canonical)
        if addresses is None:
            addresses = await self._lookup(canonical)
            if len(self._resolved) >= MAX_RESOLVED:
                self._resolved.pop(next(iter(self._resolved)))
            self._resolved[canonical] = addresses
        return normalise(sender) in addresses

    async def _lookup(self, name: str) -> frozenset[str]:
        if self._lookups is None:
            self._lookups = asyncio.Semaphore(MAX_LOOKUPS)
        async with self._lookups:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(name, None)
            except (OSError, UnicodeError, ValueError):
                return frozenset()
        return frozenset(normalise(str(info[4][0])) for info in infos)


def normalise(host: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); names lower-cased."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _where(target: tuple[str, int]) -> str:
    host, port = target
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def _close_quietly(link: Connection) -> None:
    try:
        await link.aclose()
    except (DistroError, OSError):
        pass
