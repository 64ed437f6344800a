"""The Server: takes frames from a transport's listener, runs their handlers and answers them.

Parsing, routing, running handlers and deciding the reply are pure code in other modules
(``_message``, ``_routing``, ``_dispatch``, ``_protocol``); registering handlers is
``_handlers.HandlerTable``'s, counting ``_stats``'. This one is the I/O shell: it starts handlers
in arrival order, applies back-pressure, runs tasks, sends replies and acknowledgements, settles
frames with peers that ask for it (:meth:`Peer.settle`) and closes gracefully.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import signal
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from . import _protocol
from ._acks import Acknowledger
from ._dispatch import Handling, finish_late, outcome, run_async, run_plain
from ._exceptions import MessageError, StateError, TransportError
from ._handlers import Entry as _Entry
from ._handlers import Handler, HandlerTable
from ._logging import Logger
from ._message import Message, new_message, parse_parts
from ._routing import Route
from ._stats import ServerLog, ServerStats
from ._transport import Listener, Outcome, Peer, Transport

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Handler", "Server", "ServerStats"]

_Route = Route[_Entry] | None
_Handlers = tuple[_Entry, ...]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# Read per frame: a module constant costs ~10 ns where an Enum member look-up costs ~75 ns.
_OPEN = _State.OPEN


class Server(HandlerTable):
    """A service endpoint: handlers registered by verb and uri, served over one transport.

    Make one with ``factory.server(...)``. Register handlers with :meth:`receive` (every
    message) and :meth:`head`, :meth:`get`, :meth:`post`, :meth:`put`, :meth:`delete`,
    :meth:`patch` (by verb and uri pattern), either as ``server.post(uri, handler)`` or as a
    decorator. Then ``async with server:`` (or :meth:`start` and :meth:`aclose`), or
    :meth:`run` from blocking code.

    :param transport: the transport instance, made from the user's server options.
    :param logger: where handler failures and dropped input are logged.
    :param max_concurrency: how many async handler calls may run at once; past it the server
        stops reading from the transport until some finish.
    :param close_timeout: how long :meth:`aclose` waits for handlers in flight.
    :param ack_any_address: send RECEIVED to any ``address``/``port`` a header names; by
        default only to the sender's own source address (see docs/security.md).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        logger: Logger,
        max_concurrency: int = 256,
        close_timeout: float = 5.0,
        ack_any_address: bool = False,
    ) -> None:
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
        if not close_timeout >= 0:
            raise ValueError(f"close_timeout must be >= 0, got {close_timeout!r}")
        super().__init__()
        self.transport = transport
        self._max_concurrency = max_concurrency
        self._max_backlog = max_concurrency * 4
        self._close_timeout = close_timeout
        self._state = _State.UNOPENED
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._unstarted = 0
        self._paused = False
        self._backlog: deque[tuple[bytes, Peer]] = deque()
        # Acknowledgements run apart from handlers: they never take a max_concurrency slot.
        self._acks = Acknowledger(transport, any_address=ack_any_address, report=self._acknowledged)
        self._can_reply = transport.capabilities.request_reply
        self._can_ack = transport.capabilities.acknowledgements
        # Over pub/sub another server may handle what this one has no route for: it must not
        # answer such a request with "no handler" (the transport reports requests nobody gets).
        self._answers_unrouted = not transport.capabilities.fan_out
        self._limit = transport.capabilities.max_message_size
        self.stats = ServerStats()
        """Counters of what this server has received, handled and dropped."""
        self._log = ServerLog(self.stats, logger)
        # One bound method for every dispatch, not one made per message.
        self._failed = self._log.handler_failed

    def _routes_changed(self) -> None:
        if self._listener is not None:
            self._listener.routes_changed()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where clients reach this server: ``(host, port)``, the real port once started.

        :raises StateError: the server has not been started.
        """
        if self._listener is None:
            raise StateError("the server has no address until it is started")
        return self._listener.address

    @property
    def is_serving(self) -> bool:
        """True between :meth:`start` and :meth:`aclose`."""
        return self._state is _State.OPEN

    async def start(self) -> None:
        """Bind the transport and start serving.

        :raises AddressInUse: the address is taken.
        :raises StateError: the server was already started.
        """
        if self._state is not _State.UNOPENED:
            raise StateError(f"server is {self._state.value}; a server starts only once")
        self._state = _State.OPEN
        self._loop = asyncio.get_running_loop()
        try:
            self._listener = await self.transport.listen(self)
        except BaseException:
            self._state = _State.CLOSED
            raise

    async def aclose(self) -> None:
        """Close gracefully: stop reading, let handlers in flight finish (for at most
        ``close_timeout`` seconds, then cancel them), then close the sockets. Idempotent."""
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED if self._state is _State.UNOPENED else self._state
            return
        self._state = _State.CLOSING
        listener = self._listener
        assert listener is not None
        listener.pause_reading()
        backlog, self._backlog = self._backlog, deque()
        for _, peer in backlog:
            self._refuse(peer, "closing", "server closed before the frame's turn came")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._close_timeout)
            for task in pending:
                task.cancel()
            if pending:
                self._log.cancelled(self.transport.describe(), len(pending), self._close_timeout)
                await asyncio.wait(pending, timeout=1.0)
        await self._acks.aclose()
        await listener.aclose()
        self._state = _State.CLOSED

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then close gracefully. Blocks; for scripts.

        :raises StateError: called from inside a running event loop (use ``async with``).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StateError("server.run() blocks; inside a running loop use 'async with server'")
        asyncio.run(self.serve_until_signalled())

    async def serve_until_signalled(
        self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """Start, serve until one of ``signals`` arrives (or the server is closed), then close."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        for signum in signals:
            try:
                loop.add_signal_handler(signum, stop.set)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            async with self:
                await stop.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    # -- the Receiver protocol (called by the transport) ----------------------------------

    def frame_received(self, data: bytes, peer: Peer) -> None:
        """Take one frame from the transport (see :class:`distro_core.Receiver`)."""
        self.stats.received += 1
        if self._paused or self._state is not _OPEN:
            if self._state is not _OPEN:
                self._refuse(peer, "closing", "server is closing")
            elif len(self._backlog) >= self._max_backlog:
                self._refuse(peer, "overload", f"backlog of {len(self._backlog)} frames is full")
            else:
                self._backlog.append((data, peer))
            return
        self._dispatch(data, peer)

    def frame_dropped(self, reason: str, detail: str) -> None:
        """Count and log a frame the transport dropped (see :class:`distro_core.Receiver`)."""
        self._log.dropped(reason, detail)

    # -- dispatch -------------------------------------------------------------------------

    def _dispatch(self, data: bytes, peer: Peer) -> None:
        try:
            id, headers, payload = parse_parts(data)
        except MessageError as exc:
            self._refuse(peer, "invalid", f"from {peer.host}: {exc}")
            return
        route, params = self._router.match(headers.get("verb"), headers["uri"])
        msg = new_message(id, headers, payload, params or {}, None)  # never share the empty dict
        if route is None:
            handlers: _Handlers = ()
            any_async = self._catch_all_async
        else:
            handlers = route.handlers
            any_async = self._catch_all_async or route.meta is True
        # Handlers start in arrival order: while an earlier message's async dispatch has not
        # started yet, a plain dispatch waits its turn in the loop's FIFO instead of running now.
        if any_async:
            self._unstarted += 1
            self._spawn(self._run_async(msg, route, handlers, peer), peer)
        elif self._unstarted:
            self._unstarted += 1
            self._loop.call_soon(self._run_deferred, msg, route, handlers, peer)
        else:
            done = run_plain(self._router.catch_all, handlers, msg, self._failed)
            self._finish(msg, route, peer, done)

    def _run_deferred(self, msg: Message, route: _Route, handlers: _Handlers, peer: Peer) -> None:
        self._unstarted -= 1
        done = run_plain(self._router.catch_all, handlers, msg, self._failed)
        self._finish(msg, route, peer, done)

    async def _run_async(
        self, msg: Message, route: _Route, handlers: _Handlers, peer: Peer
    ) -> None:
        self._unstarted -= 1
        done = await run_async(self._router.catch_all, handlers, msg, self._failed)
        self._finish(msg, route, peer, done)

    async def _finish_late(self, msg: Message, route: _Route, peer: Peer, late: Handling) -> None:
        self._finish(msg, route, peer, await finish_late(late, msg, self._failed))

    def _finish(self, msg: Message, route: _Route, peer: Peer, done: Any) -> None:
        """Count, answer, acknowledge and settle a message once its handlers have returned.

        :param done: what :func:`run_plain` returned (the value that answers, or a
            :class:`Handling`) or a :class:`Handling`; results still to await are awaited
            in a task first.
        """
        if type(done) is Handling:
            if done.late:
                self._spawn(self._finish_late(msg, route, peer, done), peer)
                return
            value, error, failed = done.value, done.error, done.failed
        else:  # the common case: every handler returned a plain value and none failed
            value, error, failed = done, None, False
        headers = msg.headers
        if route is None and not self._router.catch_all:
            handled = False
            self._log.dropped("no_route", _protocol.no_handler(headers))
        else:
            handled = True
            self.stats.handled += 1
        reply_to = headers.get("replyTo")
        if (
            reply_to is not None
            and self._can_reply
            and (route is not None or self._answers_unrouted)
        ):
            routed = route is not None
            data = _protocol.answer(msg, value, error, routed, self._limit, self.transport.name)
            try:
                peer.send(data, str(reply_to))
            except TransportError as exc:
                self._log.dropped("reply_failed", f"reply to {msg.id}: {exc}")
            else:
                self.stats.replies_sent += 1
        if self._can_ack and "port" in headers:
            target = _protocol.ack_target(msg)
            if target is not None:
                failure = self._acks.submit(msg, target, peer)
                if failure is not None:
                    self._log.dropped(*failure)
        if peer.settles:
            detail = (error or "a catch-all handler failed") if failed else None
            peer.settle(outcome(handled, failed), detail if handled else "no_route")

    def _acknowledged(self, failure: tuple[str, str] | None) -> None:
        if failure is None:
            self.stats.acks_sent += 1
        else:
            self._log.dropped(*failure)

    # -- bookkeeping ----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], peer: Peer | None = None) -> None:
        """Run ``coro`` as a task; with ``peer``, it is the handling of the frame ``peer``
        came with, which :meth:`_finish` settles unless the task ends early."""
        # The loop is kept from start(): asyncio.get_running_loop() makes a getpid system call.
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if peer is not None and peer.settles:
            task.add_done_callback(functools.partial(_settle_unfinished, peer))
        self._in_flight += 1
        if self._in_flight >= self._max_concurrency and not self._paused:
            self._paused = True
            if self._listener is not None:
                self._listener.pause_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            self._log.internal_error(task.exception())
        if self._paused and self._in_flight < self._max_concurrency:
            while self._backlog and self._in_flight < self._max_concurrency:
                data, peer = self._backlog.popleft()
                self._dispatch(data, peer)
            if self._in_flight < self._max_concurrency and self._state is _State.OPEN:
                self._paused = False
                if self._listener is not None:
                    self._listener.resume_reading()

    def _refuse(self, peer: Peer, reason: str, detail: str) -> None:
        """Drop a frame before any handler ran: count and log it, and settle it: returned when
        this server could not take it (another member may), else dropped."""
        self._log.dropped(reason, detail)
        if peer.settles:
            peer.settle(Outcome.RETURNED if reason in _NOT_TAKEN else Outcome.DROPPED, reason)


_NOT_TAKEN = frozenset({"closing", "overload"})
"""Drop reasons that are this server's, not the message's: settled as RETURNED."""


def _settle_unfinished(peer: Peer, task: asyncio.Task[None]) -> None:
    # Cancelled by aclose's time-out (perhaps before its first step) or ended by an error of
    # the server's own, the task never reached _finish: the handlers did not finish, so a
    # transport with redelivery offers the frame again (without counting a failure when the
    # server closing cut it short).
    if task.cancelled():
        peer.settle(Outcome.RETURNED, "closing")
    elif task.exception() is not None:
        peer.settle(Outcome.FAILED, f"internal error: {task.exception()!r}")
