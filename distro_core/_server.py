"""The Server: takes frames from a transport's listener, runs their handlers and answers them.

Parsing, routing, running handlers and deciding the reply are pure code in other modules
(``_message``, ``_routing``, ``_dispatch``, ``_protocol``); registering handlers is
``_handlers.HandlerTable``'s, counting ``_stats``'. Who gets a handler slot, what waits and what is
shed is ``_scheduler``'s. This one is the I/O shell: it hands messages to the scheduler, runs
tasks, applies back-pressure, sends replies and acknowledgements, settles frames with peers that
ask for it (:meth:`Peer.settle`) and closes gracefully.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Coroutine, Sequence
from typing import Any

from . import _protocol
from ._confirmed import Confirmed, make_window
from ._dispatch import Bound, Handling, finish_late, outcome, run_async, run_plain
from ._errors import failures, problem_of
from ._exceptions import MessageError, StateError, TransportError
from ._handlers import Entry as _Entry
from ._handlers import Handler, HandlerTable, check_timeout
from ._lifecycle import Lifecycle
from ._logging import Logger
from ._message import Message, new_message, parse_parts
from ._middleware import Middleware, build_chain, check_middleware
from ._replies import Replies, settle_unfinished
from ._routing import Route
from ._scheduler import EXPIRED, STARTED, Scheduler, bounded
from ._stats import ServerLog, ServerStats
from ._transport import Listener, Peer, Transport

__all__ = ["Handler", "Server", "ServerStats"]

_Route = Route[_Entry] | None
_Handlers = tuple[_Entry, ...]
_Job = tuple[Message, _Route, _Handlers, Peer, bytes]
"""A message waiting for its turn: ``(msg, route, handlers, peer, frame)``."""


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# Read per frame: a module constant costs ~10 ns where an Enum member look-up costs ~75 ns.
_OPEN = _State.OPEN


class Server(HandlerTable, Lifecycle):
    """A service endpoint: handlers registered by verb and uri, served over one transport.

    Make one with ``factory.server(...)``. Register handlers with :meth:`receive` (every
    message) and :meth:`head`, :meth:`get`, :meth:`post`, :meth:`put`, :meth:`delete`,
    :meth:`patch` (by verb and uri pattern), either as ``server.post(uri, handler)`` or as a
    decorator. Then ``async with server:`` (or :meth:`start` and :meth:`aclose`), or
    :meth:`run` from blocking code.

    :param transport: the transport instance, made from the user's server options.
    :param logger: where handler failures and dropped input are logged.
    :param max_concurrency: how many async handler calls may run at once, shared between
        peers (``_scheduler``: one peer cannot take the last eighth); when all are taken the
        server stops reading from the transport until some finish.
    :param max_queued: how many messages may wait for a slot (``4 * max_concurrency`` by
        default; a quarter of them per peer); past it a request is answered ``overloaded`` at
        once and a one-way message dropped, both counted ``overload``.
    :param handler_timeout: seconds an async handler may run before it is cancelled, counted
        ``handler_timeouts`` (a request gets an error reply with the code ``handler_timeout``);
        None (the default) for no limit. A route's ``timeout=`` wins. Plain handlers run
        inline and cannot be interrupted.
    :param close_timeout: how long :meth:`aclose` waits for handlers in flight.
    :param ack_any_address: send RECEIVED to any ``address``/``port`` a header names; by
        default only to the sender's own source address (see docs/security.md).
    :param confirm_window: how many ids of confirmed requests (``"confirm": true``) the
        server remembers, so that a repeat is answered with the first reply instead of being
        handled again (``_confirmed``); 0: none.
    :param confirm_window_bytes: the most bytes of remembered replies.
    :param confirm_window_age: how many seconds an id is remembered.
    :param expose_errors: tell callers what an unexpected exception was (``"ValueError:
        ..."``, its type and traceback in the error's details) instead of ``"internal error
        (message <id>)"``: for development only (``_errors``).
    :param middleware: :class:`~distro_core.middleware.Middleware` instances run around each
        message (docs/middleware.md); the chain is built by :meth:`start`.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        logger: Logger,
        max_concurrency: int = 256,
        max_queued: int | None = None,
        handler_timeout: float | None = None,
        close_timeout: float = 5.0,
        ack_any_address: bool = False,
        confirm_window: int = 10_000,
        confirm_window_bytes: int = 8 << 20,
        confirm_window_age: float = 60.0,
        expose_errors: bool = False,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        caps = transport.capabilities
        self._middleware = check_middleware(middleware)
        self._logger = logger
        # Over pub/sub (fan_out) the one peer is the bus, every sender at once: no shares.
        self._sched: Scheduler[_Job] = Scheduler(max_concurrency, max_queued, one_peer=caps.fan_out)
        if not close_timeout >= 0:
            raise ValueError(f"close_timeout must be >= 0, got {close_timeout!r}")
        self._handler_timeout = check_timeout(handler_timeout, "handler_timeout")
        window = make_window(confirm_window, confirm_window_bytes, confirm_window_age)
        super().__init__()
        self.transport = transport
        self._max_concurrency = max_concurrency
        self._close_timeout = close_timeout
        self._state = _State.UNOPENED
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self._tasks: set[asyncio.Task[None]] = set()
        # Dispatches accepted but not started: queued in the scheduler, or a task (or a call)
        # that has not taken its first step. Plain messages check it to keep arrival order.
        self._unstarted = 0
        self._paused = False
        self._waiting = self._sched.waiting  # peer -> its queued messages
        self._can_reply = caps.request_reply
        self._can_ack = caps.acknowledgements
        # Over pub/sub another server may handle what this one has no route for, or sheds: it
        # must not answer "no handler" or "overloaded" (the transport reports unheard requests).
        self._sole = not caps.fan_out
        self._limit = caps.max_message_size
        self._name = transport.name
        self._spoofable = not caps.reliable  # datagrams: see _replies (no amplification)
        self.stats = ServerStats()
        """Counters of what this server has received, handled and dropped."""
        self._log = ServerLog(self.stats, logger, transport.name)
        self._replies = Replies(transport, self.stats, self._log, ack_any_address)
        self._acks = self._replies.acks
        self._refuse = self._replies.refuse
        self._confirmed = Confirmed(window, self.stats, self._log, self._spoofable)
        self._failed = failures(self._log)  # one callback for every dispatch
        self._expose = expose_errors
        self._bound: Bound | None = None
        self._routes_changed()

    def _routes_changed(self) -> None:
        # Awaits are wrapped in a deadline only when some handler can have one.
        timed = self._handler_timeout is not None or self._timed
        self._bound = bounded(self._handler_timeout) if timed else None
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
        chain = build_chain(self._middleware)
        if chain is not None and chain.serves:  # else the path stays free of it
            from ._middleware_server import install

            install(self, chain, self._logger)
        try:
            self._listener = await self.transport.listen(self)
        except BaseException:
            self._state = _State.CLOSED
            raise
        self._log.started(self.transport.describe(), self._listener.address)

    async def aclose(self) -> None:
        """Close gracefully: refuse new messages (a request is answered ``closing`` at once),
        let handlers in flight finish (for at most ``close_timeout`` seconds, then cancel
        them), then close the sockets. Idempotent."""
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED if self._state is _State.UNOPENED else self._state
            return
        self._state = _State.CLOSING
        listener = self._listener
        assert listener is not None
        self._log.draining(len(self._tasks), self._sched.queued, self._close_timeout)
        # Reading goes on (unless paused for back-pressure): what comes is refused at once.
        for msg, _, _, peer, data in self._sched.drain():
            self._unstarted -= 1
            self._replies.closing(msg, peer, data, "server closed before the message's turn came")
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
        self._log.closed()

    # -- the Receiver protocol (called by the transport) ----------------------------------

    def frame_received(self, data: bytes, peer: Peer) -> None:
        """Take one frame from the transport (see :class:`distro_core.Receiver`)."""
        self.stats.received += 1
        if self._state is not _OPEN:
            self._replies.closing_frame(data, peer)
            return
        try:
            self._dispatch(data, peer)
        except Exception as exc:  # the server's own bug: never the transport's problem
            self._log.internal_error(exc)
            self._confirmed.abandon(data)

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
        identity = peer.identity  # authenticated sender (TLS, CURVE); read before any wrapper
        if "confirm" in headers:  # a confirmed send: its repeats are not handled again
            confirming = self._confirmed.begin(id, headers, peer, data)
            if confirming is None:
                return
            peer = confirming
        route, params = self._router.match(headers.get("verb"), headers["uri"])
        msg = new_message(id, headers, payload, params or {}, None, identity)  # params: own dict
        if route is None:
            handlers: _Handlers = ()
            any_async = self._catch_all_async
        else:
            handlers = route.handlers
            any_async = self._catch_all_async or route.meta is True
        if any_async:
            if self._sched.start(peer):  # a slot for it: run it in a task
                self._unstarted += 1
                self._spawn(self._run_async(msg, route, handlers, peer, data), peer)
            else:
                self._hold((msg, route, handlers, peer, data), True)
        # A peer's handlers start in arrival order: behind its messages waiting for a slot, or
        # while an async dispatch has not started yet, a plain one waits its turn.
        elif self._unstarted:
            if peer in self._waiting:
                self._hold((msg, route, handlers, peer, data), False)
            elif self._unstarted > self._sched.queued:  # a task has yet to take its first step
                self._unstarted += 1
                self._loop.call_soon(self._run_deferred, msg, route, handlers, peer, data)
            else:
                done = run_plain(self._router.catch_all, handlers, msg, self._failed)
                self._finish(msg, route, peer, done, data)
        else:
            done = run_plain(self._router.catch_all, handlers, msg, self._failed)
            self._finish(msg, route, peer, done, data)

    def _run_deferred(
        self, msg: Message, route: _Route, handlers: _Handlers, peer: Peer, data: bytes
    ) -> None:
        self._unstarted -= 1
        done = run_plain(self._router.catch_all, handlers, msg, self._failed)
        self._finish(msg, route, peer, done, data)

    async def _run_async(
        self, msg: Message, route: _Route, handlers: _Handlers, peer: Peer, data: bytes
    ) -> None:
        self._unstarted -= 1
        try:
            done = await run_async(self._router.catch_all, handlers, msg, self._failed, self._bound)
        finally:
            self._sched.finished(peer)
        self._finish(msg, route, peer, done, data)

    async def _finish_late(
        self, msg: Message, route: _Route, peer: Peer, late: Handling, data: bytes
    ) -> None:
        try:
            done = await finish_late(late, msg, self._failed, self._bound)
        finally:
            self._sched.finished(peer)
        self._finish(msg, route, peer, done, data)

    def _finish(self, msg: Message, route: _Route, peer: Peer, done: Any, data: bytes) -> None:
        """Count, answer, acknowledge and settle a message once its handlers have returned.

        :param done: what :func:`run_plain` returned (the value that answers, or a
            :class:`Handling`) or a :class:`Handling`; results still to await are awaited
            in a task first (which takes a slot, whatever the scheduler's rules).
        :param data: the frame the message came in (its size bounds unasked replies).
        """
        if type(done) is Handling:
            if done.late:
                self._sched.force(peer)
                self._spawn(self._finish_late(msg, route, peer, done, data), peer)
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
        if reply_to is not None and self._can_reply and (route is not None or self._sole):
            limit = self._spoofable and len(data)  # see _replies: no amplification
            problem = None if error is None else problem_of(done, msg, self._expose)
            reply = _protocol.answer(
                msg, value, problem, route is not None, self._limit, self._name, limit
            )
            if type(reply_to) is str and reply is not None:
                try:
                    peer.send(reply, reply_to)
                except TransportError as exc:
                    self._replies.failed(msg, exc)
                else:
                    self.stats.replies_sent += 1
            else:
                self._replies.send(msg, peer, reply)  # counts why it is not sent
        if self._can_ack and "port" in headers:
            self._replies.acknowledge(msg, peer, data)
        if peer.settles:
            detail = (error or "a catch-all handler failed") if failed else None
            peer.settle(outcome(handled, failed), detail if handled else "no_route")

    # -- scheduling -----------------------------------------------------------------------

    def _hold(self, job: _Job, needs_slot: bool) -> None:
        """Queue a message that cannot start now behind its peer's, or shed it."""
        msg, _, _, peer, data = job
        within = _protocol.reply_within(msg.headers)  # the caller's deadline, if it says
        deadline = None if within is None else self._loop.time() + within
        if self._sched.enqueue(peer, job, len(data), deadline, needs_slot):
            self._unstarted += 1
            return
        waits = f"{self._sched.queued} messages wait, {len(self._waiting.get(peer, ()))} its own"
        self._refuse(peer, "overload", f"message {msg.id} from {peer.host}: {waits}")
        if "replyTo" in msg.headers and self._can_reply and self._sole:
            self._replies.overloaded(msg, peer, data)

    def _advance(self) -> None:
        """A slot freed: start the queued messages whose turn it is; resume reading if the
        server paused with every slot taken."""
        sched = self._sched
        if sched.queued:
            now = self._loop.time()
            while (taken := sched.take(now)) is not None:
                job, how = taken  # still counted unstarted: a task or a call takes it over
                if how == STARTED:
                    self._spawn(self._run_async(*job), job[3])
                elif how == EXPIRED:
                    # No reply: the caller's deadline passed, it has stopped waiting.
                    self._unstarted -= 1
                    self._refuse(job[3], "expired", f"message {job[0].id}: its caller gave up")
                else:
                    self._loop.call_soon(self._run_deferred, *job)
        if self._paused and sched.running < self._max_concurrency:
            self._paused = False
            if self._listener is not None:
                self._listener.resume_reading()

    # -- bookkeeping ----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], peer: Peer) -> None:
        """Run ``coro``, the handling of the frame ``peer`` came with, as a task; it holds a
        slot, and :meth:`_finish` settles the frame unless the task ends early."""
        # The loop is kept from start(): asyncio.get_running_loop() makes a getpid system call.
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if peer.settles:
            task.add_done_callback(functools.partial(settle_unfinished, peer))
        if (
            self._sched.running >= self._max_concurrency
            and not self._paused
            and self._state is _OPEN
        ):
            self._paused = True
            if self._listener is not None:
                self._listener.pause_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():  # by aclose's time-out: its message never finished
            self.stats.cancelled += 1
        elif task.exception() is not None:
            self._log.internal_error(task.exception())
        if self._state is _OPEN and (self._paused or self._sched.queued):
            self._advance()
