"""Clients: send messages to a server and await replies, async (:class:`Client`) or blocking
(:class:`SyncClient`). Both share the pure request/reply code in ``_protocol``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from . import _protocol
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
from ._message import Message, parse
from ._transport import Connection, RequestFailure, Transport

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Client", "SyncClient"]

T = TypeVar("T")

DEFAULT_MAX_PENDING = 10_000
"""How many requests one client lets wait for replies at once, by default."""


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Client:
    """Sends messages to one server over one transport (asyncio).

    Make one with ``factory.client(...)`` and use it as ``async with factory.client(...) as c``
    (or :meth:`open` and :meth:`aclose`).

    :param transport: the transport instance, made from the user's client options.
    :param logger: where unexpected input is logged.
    :param max_pending: how many requests may wait for replies at once; a request past it waits
        (within its own timeout) until another one ends, so a burst cannot grow memory without
        bound.
    """

    def __init__(
        self, transport: Transport, *, logger: Logger, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        if type(max_pending) is not int or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        self.transport = transport
        self._max_pending = max_pending
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._logger = logger
        self._quiet = RateLimitedLog(logger)
        self._state = _State.UNOPENED
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by open()
        self._pending: _protocol.Pending[asyncio.Future[Any]] = _protocol.Pending()
        self._limit = transport.capabilities.max_message_size
        self._can_request = transport.capabilities.request_reply

    async def open(self) -> None:
        """Open the link to the server.

        :raises ConnectionError: the server cannot be reached (connected transports).
        :raises StateError: already opened.
        """
        if self._state is not _State.UNOPENED:
            raise StateError(f"client is {self._state.value}; a client opens only once")
        self._loop = asyncio.get_running_loop()
        self._conn = await self.transport.connect(self)
        self._state = _State.OPEN

    async def aclose(self) -> None:
        """Close the link; requests still waiting fail with ConnectionError. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._fail_pending(ConnectionError(f"client for {self.transport.describe()} closed"))
        if self._conn is not None:
            await self._conn.aclose()

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

    def _link(self) -> Connection:
        if self._state is not _State.OPEN or self._conn is None:
            raise StateError(f"client is {self._state.value}; use 'async with factory.client()'")
        return self._conn

    def _check_size(self, data: bytes) -> None:
        if self._limit is not None and len(data) > self._limit:
            raise MessageTooLarge(len(data), self._limit, self.transport.name)

    async def send(self, msg: Message) -> None:
        """Send ``msg`` one way.

        :raises MessageTooLarge: it does not fit in one frame of this transport.
        :raises TransportError: it could not be sent (``ConnectionError``: unreachable).
        """
        conn = self._conn
        if conn is None or self._state is not _State.OPEN:
            conn = self._link()  # raises the StateError that explains what is wrong
        if type(msg) is not Message and not isinstance(msg, Message):
            raise TypeError(f"send() takes a distro Message, got {type(msg).__name__}")
        data = msg.to_bytes()
        self._check_size(data)
        await conn.send(data, msg)

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
        conn = self._link()
        if not isinstance(msg, Message):
            raise TypeError(f"request() takes a distro Message, got {type(msg).__name__}")
        if type(timeout) is not float and type(timeout) is not int:
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        if not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a positive finite number of seconds, got {timeout}")
        if not self._can_request:
            raise DistroError(f"transport {self.transport.name!r} does not support request/reply")
        data = _protocol.as_request(msg, conn.reply_to, timeout)
        self._check_size(data)
        loop = self._loop  # kept from open(): get_running_loop() costs a getpid system call
        if len(self._pending) >= self._max_pending:
            timeout = await self._wait_for_slot(msg, timeout)
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.add(msg.id, future)
        try:
            timer = loop.call_later(timeout, _expire, future, msg.id, timeout)
            try:
                await conn.request(data, msg)
                reply: Message = await future
                return reply
            finally:
                timer.cancel()
        except _Unanswerable as exc:
            raise exc.error_for(msg) from None
        except RemoteError as exc:
            if exc.remote:
                raise
            # The server cut its text to fit a small request (no amplification over
            # datagrams): say what the code means, as far as this side can tell.
            raise RemoteError(msg.id, _protocol.error_text(exc.code, msg), exc.code) from None
        finally:
            self._pending.pop(msg.id)
            if self._slot_waiters:
                self._wake_one()

    async def _wait_for_slot(self, msg: Message, timeout: float) -> float:
        """Wait until fewer than ``max_pending`` requests are pending; returns the time left."""
        loop = self._loop
        deadline = loop.time() + timeout
        while len(self._pending) >= self._max_pending:
            left = deadline - loop.time()
            if left <= 0:
                raise RequestTimeout(msg.id, timeout)
            waiter: asyncio.Future[None] = loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                raise RequestTimeout(msg.id, timeout) from None
        return max(deadline - loop.time(), 1e-3)

    def _wake_one(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- the ClientReceiver protocol (called by the transport) -----------------------------

    def frame_received(self, data: bytes) -> None:
        """Take one frame sent back to this client (see :class:`distro_core.ClientReceiver`)."""
        try:
            msg = parse(data)
            outcome = _protocol.reply_outcome(msg)
        except MessageError as exc:
            self._quiet.log(
                "invalid", logging.WARNING, "distro client: dropped invalid frame: %s", exc
            )
            return
        if outcome is None:
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
            future.set_exception(_Unanswerable(failure, detail))

    def connection_lost(self, exc: BaseException | None) -> None:
        """The link broke; fail every waiting request (see :class:`distro_core.ClientReceiver`)."""
        if len(self._pending):
            error = ConnectionError(f"lost the link to {self.transport.describe()}: {exc}")
            if exc is not None:
                error.__cause__ = exc
            self._fail_pending(error)

    def _fail_pending(self, error: BaseException) -> None:
        for future in self._pending.drain():
            if not future.done():
                future.set_exception(error)


class _Unanswerable(Exception):
    """Carries a transport's ``request_failed`` to the waiting :meth:`Client.request`, which
    builds the error with the request at hand (the hot path keeps no message per request)."""

    def __init__(self, failure: RequestFailure, detail: str) -> None:
        super().__init__(failure, detail)
        self.failure = failure
        self.detail = detail

    def error_for(self, msg: Message) -> DistroError:
        if self.failure is RequestFailure.NO_RECEIVER:
            text = f"{_protocol.no_handler(msg.headers)}: {self.detail}"
            return RemoteError(msg.id, text, _protocol.NO_HANDLER)
        return RemoteError(msg.id, f"the request was refused: {self.detail}")


def _expire(future: asyncio.Future[Any], msg_id: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(RequestTimeout(msg_id, timeout))


class SyncClient:
    """A blocking client for scripts: the same as :class:`Client`, run on a private event loop
    in a background thread, so it works whether or not the calling thread runs a loop.

    Use it as ``with factory.sync_client(...) as client:``.
    """

    def __init__(self, make_client: Callable[[], Client]) -> None:
        self._make_client = make_client
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None:
            coro.close()
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def open(self) -> None:
        """Start the background loop and open the link.

        :raises ConnectionError: the server cannot be reached.
        """
        if self._loop is not None:
            raise StateError("sync client already open")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="distro-sync-client", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        self._client = self._make_client()
        try:
            self._run(self._client.open())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the link and stop the background loop. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            loop.close()

    def send(self, msg: Message) -> None:
        """Send ``msg`` one way; see :meth:`Client.send`."""
        if self._client is None:
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        self._run(self._client.send(msg))

    def request(self, msg: Message, timeout: float = 5.0) -> Message:
        """Send a request and wait for its reply; see :meth:`Client.request`."""
        if self._client is None:
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        return self._run(self._client.request(msg, timeout))

    def __enter__(self) -> SyncClient:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
