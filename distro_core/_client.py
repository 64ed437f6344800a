"""The asyncio client (:class:`Client`): sends messages to a server, or to several, and awaits
replies and confirmations. The pure request/reply code is in ``_protocol``; the blocking
client is in ``_sync_client``."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _protocol
from ._backlog import Backlog
from ._confirm import Retransmit
from ._exceptions import (
    ConnectionError,
    DistroError,
    MessageError,
    MessageTooLarge,
    RemoteError,
    RequestTimeout,
    StateError,
)
from ._logging import Logger, RateLimitedLog
from ._members import Member, Members
from ._message import Message, parse
from ._middleware import Middleware, build_chain, check_middleware
from ._stats import ClientStats
from ._transport import Connection, RequestFailure, Transport
from ._waiting import Slots, Unanswerable, expire, explained, lost, wait

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Client"]

DEFAULT_MAX_PENDING = 10_000
"""How many requests one client lets wait for replies at once, by default."""

_RESEND = frozenset({_protocol.CLOSING, _protocol.OVERLOADED})
"""Error codes of a server that did not take a message: a confirmed send is sent again."""


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Client:
    """Sends messages to a server (or spreads them over several) over one transport (asyncio).

    Make one with ``factory.client(...)`` and use it as ``async with factory.client(...) as c``
    (or :meth:`open` and :meth:`aclose`).

    :param transport: the transport instance, made from the user's client options.
    :param logger: where unexpected input is logged.
    :param max_pending: how many requests may wait for replies at once; a request past it waits
        (within its own timeout) until another one ends, so a burst cannot grow memory without
        bound.
    :param members: with ``servers=[(host, port), ...]``: one transport per server, and how each
        is named (``transport`` is the first). Messages go to them in turn; one that cannot be
        reached is skipped (for 0.5 s, doubled each time it is found down again, up to 5 s), and
        a message it could not take goes to the next.
    :param middleware: :class:`~distro_core.middleware.Middleware` instances run around each
        send and request (docs/middleware.md); the chain is built by :meth:`open`.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        logger: Logger,
        max_pending: int = DEFAULT_MAX_PENDING,
        members: Sequence[tuple[Transport, str]] | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self._middleware = check_middleware(middleware)
        if type(max_pending) is not int or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        self.transport = transport
        self.stats = ClientStats()
        """Counters of what this client has sent and been sent."""
        self._members: Members | None = None
        if members is not None:
            transports, wheres = zip(*members, strict=True)
            self._members = Members(transports, wheres, self, logger)
        caps = transport.capabilities
        self._retransmit = None if caps.reliable else Retransmit()
        self._stores = False  # set by open(): see _store
        self._max_pending = max_pending
        self._slots = Slots(max_pending)
        self._logger = logger
        self._quiet = RateLimitedLog(logger)
        self._state = _State.UNOPENED
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by open()
        self._pending: _protocol.Pending[asyncio.Future[Any]] = _protocol.Pending()
        self._limit = caps.max_message_size
        self._can_request = caps.request_reply
        self._plain_requests = False  # the connection sends requests as other frames
        self._backlog: Backlog | None = None  # what send_nowait could not write at once
        self._failed: Backlog | None = None  # the last backlog, until its error is raised

    async def open(self) -> None:
        """Open the link to the server.

        :raises ConnectionError: the server cannot be reached (connected transports).
        :raises StateError: already opened.
        """
        if self._state is not _State.UNOPENED:
            raise StateError(f"client is {self._state.value}; a client opens only once")
        self._loop = asyncio.get_running_loop()
        chain = build_chain(self._middleware)
        mw = None
        if chain is not None and chain.calls:  # else the path stays free of it
            from ._middleware_client import install

            mw = install(self, chain, self._logger)
        if self._members is None:
            conn = self._conn = await self.transport.connect(self)
            # A request frame goes out as any other frame: written at once when it can be.
            self._plain_requests = type(conn).request is Connection.request
            # A durable transport whose connection confirms storing: confirm=True means stored.
            durable = self.transport.capabilities.durable
            self._stores = durable and type(conn).store is not Connection.store
            if mw is not None:
                self._conn = mw.wrap(conn)
        else:
            await self._members.open()
        self._state = _State.OPEN

    async def aclose(self) -> None:
        """Close the link; requests still waiting fail with ConnectionError. Idempotent."""
        if self._state is _State.CLOSED:
            return
        if self._backlog is not None:
            # What send_nowait queued goes out before the link closes (a failure was logged).
            with contextlib.suppress(DistroError):
                await self._backlog.drain()
        self._state = _State.CLOSED
        self._fail_pending(ConnectionError(f"client for {self._describe()} closed"))
        if self._conn is not None:
            await self._conn.aclose()
        if self._members is not None:
            await self._members.aclose()

    def _describe(self) -> str:
        if self._members is None:
            return self.transport.describe()
        return f"{self.transport.name} servers {self._members.describe()}"

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise StateError(f"client is {self._state.value}; use 'async with factory.client()'")

    def _check_size(self, data: bytes) -> None:
        if self._limit is not None and len(data) > self._limit:
            raise MessageTooLarge(len(data), self._limit, self.transport.name)

    async def send(self, msg: Message, *, confirm: bool = False, timeout: float = 5.0) -> None:
        """Send ``msg`` one way; with ``confirm=True``, wait until the server confirms it.

        A confirmed send (docs/wire-format.md, "Confirmed sends") returns once the server's
        handlers finished without raising. Until then the client sends it again where it may
        have been lost: over datagrams (udp) every 50 ms, doubling up to 1 s; over a connection
        that broke, once it is made again (or on another of ``servers=``); and when the server
        answered that it was closing or overloaded. The server recognises a message it has
        already handled by its id and confirms it again without handling it twice (within its
        window of recent ids: see :class:`~distro_core.Server`).

        Over a durable transport that confirms storing (redis-streams, jetstream: see
        :attr:`confirms`), it returns once the broker stored the message instead, whether or
        not a server runs; a refusal by the broker raises ``TransportError``.

        :param confirm: wait for the server's confirmation.
        :param timeout: with ``confirm``, seconds to wait for it (a positive, finite number).
        :raises MessageTooLarge: it does not fit in one frame of this transport.
        :raises TransportError: it could not be sent (``ConnectionError``: unreachable; with
            ``confirm``, only once ``timeout`` has passed without a server to take it).
        :raises RequestTimeout: with ``confirm``, not confirmed within ``timeout``.
        :raises RemoteError: with ``confirm``, the server's handler raised or no handler took
            it (:attr:`RemoteError.code` says which).
        :raises DistroError: with ``confirm``, the transport has no replies to confirm with.
        """
        conn = self._conn
        if conn is None or confirm or self._state is not _State.OPEN:
            await self._send_other(msg, confirm, timeout)
            return
        if type(msg) is not Message and not isinstance(msg, Message):
            raise TypeError(f"send() takes a distro Message, got {type(msg).__name__}")
        data = msg.to_bytes()
        limit = self._limit
        if limit is not None and len(data) > limit:
            raise MessageTooLarge(len(data), limit, self.transport.name)
        if self._backlog is None:
            if conn.send_nowait(data, msg):  # written at once: no coroutine of the transport's
                self.stats.sent += 1
                return
        else:
            await self._backlog.drain()  # after what send_nowait queued, in order
        await conn.send(data, msg)
        self.stats.sent += 1

    def send_nowait(self, msg: Message) -> None:
        """Send ``msg`` one way without waiting: for a sender of many messages in a row.

        The message is written to the connection at once when it takes it without waiting
        (tcp and udp while their socket takes more; zmq under its high-water mark), else
        queued behind the others and sent in order by a task of the client's. Like asyncio's
        ``StreamWriter.write``, it never waits for the peer: call ``await client.drain()``
        every burst (say every 64 messages) so that a slow server slows the sender down and
        memory stays bounded::

            for n, order in enumerate(orders, 1):
                client.send_nowait(distro.message(headers, order))
                if n % 64 == 0:
                    await client.drain()
            await client.drain()

        What ``await client.send(msg)`` guarantees holds once ``drain()`` returned: every
        message was handed to the transport, in order.

        :raises MessageTooLarge: it does not fit in one frame of this transport.
        :raises TransportError: messages queued earlier could not be sent (they are counted
            in the error's text and logged); raised once, by this or the next :meth:`drain`.
        :raises StateError: the client is not open.
        """
        conn = self._conn
        if self._state is not _State.OPEN:
            self._check_open()
        if type(msg) is not Message and not isinstance(msg, Message):
            raise TypeError(f"send_nowait() takes a distro Message, got {type(msg).__name__}")
        data = msg.to_bytes()
        limit = self._limit
        if limit is not None and len(data) > limit:
            raise MessageTooLarge(len(data), limit, self.transport.name)
        backlog = self._backlog
        if backlog is None:
            if self._failed is not None:
                self._failed.raise_error()
            if conn is not None and conn.send_nowait(data, msg):
                self.stats.sent += 1
                return
            backlog = self._backlog = Backlog(
                self._send_queued, self._count_sent, self._backlog_done, self._logger
            )
        backlog.push(data, msg)

    async def drain(self) -> None:
        """Wait until every message given to :meth:`send_nowait` was handed to the transport
        (as ``await send(msg)`` returns), in order; at once when none is waiting.

        :raises TransportError: one could not be sent; it and those queued behind it were
            dropped (the error says how many; they are logged too).
        """
        backlog = self._backlog if self._backlog is not None else self._failed
        if backlog is not None:
            await backlog.drain()
            self._failed = None

    async def _send_queued(self, data: bytes, msg: Message) -> None:
        if self._conn is not None:
            await self._conn.send(data, msg)
        else:
            assert self._members is not None
            await self._members.send(data, msg)

    def _count_sent(self) -> None:
        self.stats.sent += 1

    def _backlog_done(self, backlog: Backlog) -> None:
        if self._backlog is backlog:
            self._backlog = None
        if backlog.failed:
            self._failed = backlog  # keeps the error for the next drain or send_nowait

    async def _send_other(self, msg: Message, confirm: bool, timeout: float) -> None:
        """A confirmed send, a send over ``servers=``, or a send on a client not open."""
        if confirm:
            if self._stores:
                await self._store(msg, timeout)
            else:
                await self._call(msg, timeout, True, "send")
            return
        self._check_open()  # raises the StateError that explains what is wrong
        if not isinstance(msg, Message):
            raise TypeError(f"send() takes a distro Message, got {type(msg).__name__}")
        data = msg.to_bytes()
        self._check_size(data)
        assert self._members is not None
        await self._members.send(data, msg)
        self.stats.sent += 1

    @property
    def confirms(self) -> str:
        """What ``send(msg, confirm=True)`` waits for once the client is open: ``"stored"``
        (a durable transport whose broker acknowledges storing the message) or ``"handled"``
        (a server's handlers finished without raising)."""
        return "stored" if self._stores else "handled"

    async def request(self, msg: Message, timeout: float = 5.0) -> Message:
        """Send ``msg`` as a request and wait for the reply.

        :param timeout: seconds to wait for the reply (a positive, finite number). The request
            carries it to the server (the ``replyWithin`` header, in milliseconds), which does
            not start a request still waiting in its queues past that deadline.
        :returns: the reply; its payload is the handler's return value.
        :raises TypeError, ValueError: ``timeout`` is not a positive finite number.
        :raises RequestTimeout: no reply within ``timeout`` (time spent waiting for a free slot
            under ``max_pending`` counts).
        :raises RemoteError: the handler raised, no handler matched, the server was
            overloaded...: :attr:`RemoteError.code` says which.
        :raises MessageTooLarge, TransportError: as for :meth:`send`.
        """
        conn = self._conn
        if conn is None:
            answer = await self._call(msg, timeout, False, "request")
            assert answer is not None
            return answer
        self._check_call(msg, timeout, "request")
        self.stats.requests += 1
        data = _protocol.as_request(msg, conn.reply_to, timeout)
        self._check_size(data)
        loop = self._loop  # kept from open(): get_running_loop() costs a getpid system call
        if len(self._pending) >= self._max_pending:
            timeout = await self._slots.wait(self._loop, msg.id, timeout, self._pending)
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.add(msg.id, future)
        try:
            timer = loop.call_later(timeout, expire, future, msg.id, timeout)
            try:
                if not (self._plain_requests and conn.send_nowait(data, msg)):
                    await conn.request(data, msg)
                reply: Message = await future
                return reply
            finally:
                timer.cancel()
        except (Unanswerable, RemoteError) as exc:
            raise explained(exc, msg) from None
        finally:
            self._pending.pop(msg.id)
            if self._slots.waiters:
                self._slots.wake_one()

    def _check_call(self, msg: Message, timeout: float, what: str) -> None:
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"{what}() takes a distro Message, got {type(msg).__name__}")
        check_timeout(timeout)
        if not self._can_request:
            raise DistroError(
                f"transport {self.transport.name!r} does not support request/reply"
                + (", so it cannot confirm a send" if what == "send" else "")
            )

    async def _store(self, msg: Message, timeout: float) -> None:
        """A confirmed send over a durable transport that confirms storing (see
        :meth:`Connection.store`): it returns once the broker stored the message."""
        self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"send() takes a distro Message, got {type(msg).__name__}")
        check_timeout(timeout)
        data = msg.to_bytes()
        self._check_size(data)
        conn = self._conn
        assert conn is not None  # durable transports are buses: no servers= here
        try:
            await asyncio.wait_for(conn.store(data, msg), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(msg.id, timeout) from None
        self.stats.sent += 1
        self.stats.confirmed += 1

    async def _call(self, msg: Message, timeout: float, confirm: bool, what: str) -> Message | None:
        """A request over ``servers=``, or a confirmed send: sent again where it may have been
        lost (see :meth:`send`) until its reply comes or ``timeout`` passes."""
        self._check_call(msg, timeout, what)
        loop = self._loop
        if len(self._pending) >= self._max_pending:
            timeout = await self._slots.wait(self._loop, msg.id, timeout, self._pending)
        deadline = loop.time() + timeout
        self.stats.requests += 1
        pause = 0.02  # before sending again after a broken link or a server that refused it
        sent = False
        member: Member | None = None
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise RequestTimeout(msg.id, timeout)
                future: asyncio.Future[Any] = loop.create_future()
                self._pending.add(msg.id, future)
                try:
                    conn, member, data = await self._send_request(msg, left, confirm)
                except ConnectionError:
                    _drop(self._pending.pop(msg.id))
                    if not confirm or deadline - loop.time() <= pause:
                        raise
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    continue
                if sent:
                    self.stats.resent += 1
                sent = True
                retransmit = self._retransmit if confirm else None
                waits = [left] if retransmit is None else retransmit.intervals(left)
                for pause_for in waits:
                    if await wait(loop, future, pause_for) or loop.time() >= deadline:
                        break
                    try:
                        await conn.request(data, msg)
                    except ConnectionError:
                        break  # sent again from the top, perhaps to another member
                    self.stats.resent += 1
                if not future.done():
                    self._forget(msg.id, member)
                    continue  # time left: the link broke; else the top raises RequestTimeout
                try:
                    reply: Message = future.result()
                except ConnectionError:
                    # The link broke after it was sent: sent again (over ``servers=``, to the
                    # next member; a plain request may then be handled twice if its server
                    # handled it before it died).
                    pass
                except RemoteError as exc:
                    if not confirm or exc.code not in _RESEND:
                        raise explained(exc, msg) from None
                except Unanswerable as exc:
                    raise explained(exc, msg) from None
                else:
                    if confirm:
                        self.stats.confirmed += 1
                    return reply
                self._forget(msg.id, member)
                member = None
                left = deadline - loop.time()
                if left > pause:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.5)
        finally:
            self._forget(msg.id, member)
            if self._slots.waiters:
                self._slots.wake_one()

    async def _send_request(
        self, msg: Message, left: float, confirm: bool
    ) -> tuple[Connection, Member | None, bytes]:
        """Send the request frame to the server, or to the next member that takes it.

        :returns: the connection it went over, its member (None without ``servers=``) and
            the frame, to send again.
        """
        members = self._members
        if members is None:
            conn = self._conn
            assert conn is not None
            data = self._encode(msg, conn.reply_to, left, confirm)
            await conn.request(data, msg)
            return conn, None, data
        return await members.request(msg, lambda to: self._encode(msg, to, left, confirm))

    def _encode(self, msg: Message, reply_to: str, left: float, confirm: bool) -> bytes:
        data = _protocol.as_request(msg, reply_to, left, confirm)
        self._check_size(data)
        return data

    def _forget(self, msg_id: str, member: Member | None) -> None:
        _drop(self._pending.pop(msg_id))
        if member is not None:
            member.inflight.discard(msg_id)

    # -- the ClientReceiver protocol (called by the transport) -----------------------------

    def frame_received(self, data: bytes) -> None:
        """Take one frame sent back to this client (see :class:`distro_core.ClientReceiver`)."""
        try:
            msg = parse(data)
            outcome = _protocol.reply_outcome(msg)
        except MessageError as exc:
            self.stats.invalid += 1
            self._quiet.log(
                "invalid", logging.WARNING, "distro client: dropped invalid frame: %s", exc
            )
            return
        if outcome is None:
            self.stats.invalid += 1
            self._quiet.log(
                "unexpected",
                logging.WARNING,
                "distro client: dropped %s message %s: clients only take replies",
                msg.headers["uri"],
                msg.id,
            )
            return
        request_id, _, error = outcome
        future = self._pending.pop(request_id)
        if future is None or future.done():
            self.stats.late += 1
            self._quiet.log(
                "late",
                logging.INFO,
                "distro client: reply to %s came after its request ended",
                request_id,
            )
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(msg)

    def request_failed(self, request_id: str, failure: RequestFailure, detail: str) -> None:
        """The transport knows ``request_id`` gets no reply: fail it now (see
        :class:`distro_core.transport.ClientReceiver`)."""
        future = self._pending.pop(request_id)
        if future is not None and not future.done():
            future.set_exception(Unanswerable(failure, detail))

    def unheard(self, detail: str) -> None:
        """A one-way send reached no receiver: count and log it (see
        :class:`distro_core.transport.ClientReceiver`)."""
        self.stats.unheard += 1
        self._quiet.log(
            "unheard", logging.WARNING, "distro client: a message reached no server: %s", detail
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        """The link broke; fail every waiting request (see :class:`distro_core.ClientReceiver`)."""
        if len(self._pending):
            self._fail_pending(lost(self.transport.describe(), exc))

    def member_lost(self, member: Member, exc: BaseException | None) -> None:
        """The link to one of ``servers=`` broke: fail the requests sent over it (a confirmed
        send is sent again, to the next member) and skip it for a while."""
        if self._state is not _State.OPEN or self._members is None:
            return
        self._members.down(member, exc)
        if member.inflight:
            error = lost(member.where, exc)
            for request_id in list(member.inflight):
                future = self._pending.pop(request_id)
                if future is not None and not future.done():
                    future.set_exception(error)
            member.inflight.clear()

    def _fail_pending(self, error: BaseException) -> None:
        for future in self._pending.drain():
            if not future.done():
                future.set_exception(error)


def _drop(future: asyncio.Future[Any] | None) -> None:
    """A waiter given up on: what it was failed with (a broken link reported while it was
    being sent again) is read, not left for asyncio to report as never retrieved."""
    if future is not None:
        if future.done():
            if not future.cancelled():
                future.exception()
        else:
            future.cancel()


def check_timeout(timeout: object) -> None:
    """:raises TypeError, ValueError: ``timeout`` is not a positive, finite number of seconds."""
    if type(timeout) is not float and type(timeout) is not int:
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive finite number of seconds, got {timeout}")
