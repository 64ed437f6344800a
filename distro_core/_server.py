"""The Server: registers handlers, takes frames from a transport's listener and answers them.

Parsing, routing and building replies are pure code in other modules; this one is the I/O
shell: it schedules handlers, applies back-pressure, sends replies and acknowledgements, keeps
statistics and closes gracefully.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, overload

import attrs

from . import _protocol
from ._acks import Acknowledger
from ._exceptions import MessageError, StateError, TransportError
from ._handlers import Entry as _Entry
from ._handlers import F, Handler, Verb
from ._handlers import entry as _entry
from ._logging import Logger, RateLimitedLog
from ._message import Message, new_message, parse_parts
from ._routing import Route, Router
from ._transport import Listener, Peer, RouteInfo, Transport

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Handler", "Server", "ServerStats"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.define
class ServerStats:
    """Counters of what a server has seen since it started.

    :ivar received: frames taken from the transport.
    :ivar handled: messages dispatched to at least one handler and finished.
    :ivar dropped: frames or messages dropped, by reason (``invalid``, ``no_route``,
        ``overload``, ``too_large``, ``truncated``, ``ack_refused``, ``ack_failed``, ...).
    :ivar handler_errors: handler calls that raised.
    :ivar replies_sent: replies (and error replies) sent to requests.
    :ivar acks_sent: RECEIVED acknowledgements sent.
    """

    received: int = 0
    handled: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)
    handler_errors: int = 0
    replies_sent: int = 0
    acks_sent: int = 0

    @property
    def dropped_total(self) -> int:
        """All dropped frames and messages, whatever the reason."""
        return sum(self.dropped.values())


class Server:
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
        self.transport = transport
        self._logger = logger
        self._quiet = RateLimitedLog(logger)
        self._router: Router[_Entry] = Router()
        self._catch_all_async = False
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
        self._acks = Acknowledger(transport, any_address=ack_any_address)
        self._can_reply = transport.capabilities.request_reply
        self._can_ack = transport.capabilities.acknowledgements
        # Over pub/sub another server may handle what this one has no route for: it must not
        # answer such a request with "no handler" (the transport reports requests nobody gets).
        self._answers_unrouted = not transport.capabilities.fan_out
        self._limit = transport.capabilities.max_message_size
        self.stats = ServerStats()
        """Counters of what this server has received, handled and dropped."""

    # -- registering handlers -------------------------------------------------------------

    def receive(self, handler: F) -> F:
        """Register ``handler`` for every message, whatever its uri or verb.

        :returns: the handler, so this works as a decorator.
        """
        entry = _entry(handler)
        self._router.add_catch_all(entry)
        self._catch_all_async = self._catch_all_async or entry.is_async
        self._routes_changed()
        return handler

    @overload
    def route(self, verb: str, uri: str) -> Callable[[F], F]: ...
    @overload
    def route(self, verb: str, uri: str, handler: F) -> F: ...

    def route(self, verb: str, uri: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register ``handler`` for messages with this verb whose uri matches ``uri``.

        ``{name}`` segments match one path segment each and land in ``msg.params``; the match
        ignores case. Without ``handler``, returns a decorator.

        :raises RouteError: the pattern or verb is malformed.
        """
        if handler is None:
            return lambda fn: self.route(verb, uri, fn)
        route = self._router.add(verb, uri, _entry(handler))
        route.meta = any(h.is_async for h in route.handlers)
        self._routes_changed()
        return handler

    head = Verb("HEAD", "Register a HEAD handler (see :meth:`route`).")
    get = Verb("GET", "Register a GET handler; messages without a verb come here too.")
    post = Verb("POST", "Register a POST handler (see :meth:`route`).")
    put = Verb("PUT", "Register a PUT handler (see :meth:`route`).")
    delete = Verb("DELETE", "Register a DELETE handler (see :meth:`route`).")
    patch = Verb("PATCH", "Register a PATCH handler (see :meth:`route`).")

    @property
    def routes(self) -> Sequence[RouteInfo]:
        """The verb routes registered so far."""
        return tuple(RouteInfo(r.verb, r.pattern) for r in self._router.routes)

    @property
    def has_catch_all(self) -> bool:
        """Whether any handler was registered with :meth:`receive`."""
        return bool(self._router.catch_all)

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
        self._backlog.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._close_timeout)
            for task in pending:
                task.cancel()
            if pending:
                self._logger.log(
                    logging.WARNING,
                    "distro server %s: cancelled %d handler(s) still running after %.3gs",
                    self.transport.describe(),
                    len(pending),
                    self._close_timeout,
                )
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
        if self._paused or self._state is not _State.OPEN:
            if self._state is not _State.OPEN:
                self._drop("closing", "server is closing")
            elif len(self._backlog) >= self._max_backlog:
                self._drop("overload", f"backlog of {len(self._backlog)} frames is full")
            else:
                self._backlog.append((data, peer))
            return
        self._dispatch(data, peer)

    def frame_dropped(self, reason: str, detail: str) -> None:
        """Count and log a frame the transport dropped (see :class:`distro_core.Receiver`)."""
        self._drop(reason, detail)

    # -- dispatch -------------------------------------------------------------------------

    def _dispatch(self, data: bytes, peer: Peer) -> None:
        try:
            id, headers, payload = parse_parts(data)
        except MessageError as exc:
            self._drop("invalid", f"from {peer.host}: {exc}")
            return
        route, params = self._router.match(headers.get("verb"), headers["uri"])
        msg = new_message(id, headers, payload, params or {}, None)  # never share the empty dict
        if route is None:
            handlers: tuple[_Entry, ...] = ()
            any_async = self._catch_all_async
        else:
            handlers = route.handlers
            any_async = self._catch_all_async or route.meta is True
        # Handlers start in arrival order: while an earlier message's async dispatch has not
        # started yet, a plain dispatch waits its turn in the loop's FIFO instead of running now.
        if any_async:
            self._unstarted += 1
            self._spawn(self._handle_async(msg, route, handlers, peer))
        elif self._unstarted:
            self._unstarted += 1
            self._loop.call_soon(self._run_deferred, msg, route, handlers, peer)
        else:
            self._run_sync(msg, route, handlers, peer)

    def _run_deferred(
        self, msg: Message, route: Route[_Entry] | None, handlers: tuple[_Entry, ...], peer: Peer
    ) -> None:
        self._unstarted -= 1
        self._run_sync(msg, route, handlers, peer)

    def _run_sync(
        self, msg: Message, route: Route[_Entry] | None, handlers: tuple[_Entry, ...], peer: Peer
    ) -> None:
        value: Any = None
        error: str | None = None
        # Set once a plain handler returns an awaitable: from then on results are kept in
        # registration order, (entry, result, answers), and resolved by _finish_late.
        late: list[tuple[_Entry, Any, bool]] | None = None
        for entry in self._router.catch_all:
            try:
                result = entry.fn(msg)
            except Exception as exc:
                self._handler_failed(entry, msg, exc)
                continue
            # Most handlers return None: test that before the (slower) awaitable check.
            if result is not None and inspect.isawaitable(result):
                late = late or []
                late.append((entry, result, False))
        for entry in handlers:
            try:
                result = entry.fn(msg)
            except Exception as exc:
                failure = self._handler_failed(entry, msg, exc)
                error = error or failure
                continue
            if late is not None:
                late.append((entry, result, True))
            elif result is not None:
                if inspect.isawaitable(result):
                    late = [(entry, result, True)]
                elif value is None:
                    value = result
        if late is not None:
            self._spawn(self._finish_late(msg, route, peer, late, value, error))
            return
        self._finish(msg, route, peer, value, error)

    def _handler_failed(self, entry: _Entry, msg: Message, exc: Exception) -> str:
        self.stats.handler_errors += 1
        self._logger.log(
            logging.ERROR,
            "distro: handler %s failed on message %s (%s %s): %s",
            entry.name,
            msg.id,
            msg.headers.get("verb") or "GET",
            msg.headers["uri"],
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        return f"{type(exc).__name__}: {exc}"

    async def _handle_async(
        self, msg: Message, route: Route[_Entry] | None, handlers: tuple[_Entry, ...], peer: Peer
    ) -> None:
        self._unstarted -= 1
        value: Any = None
        error: str | None = None
        for entry in self._router.catch_all:
            await self._call_async(entry, msg)
        for entry in handlers:
            result, err = await self._call_async(entry, msg)
            if err is not None:
                error = error or err
            elif value is None:
                value = result
        self._finish(msg, route, peer, value, error)

    async def _call_async(self, entry: _Entry, msg: Message) -> tuple[Any, str | None]:
        try:
            result = entry.fn(msg)
            if inspect.isawaitable(result):
                result = await result
            return result, None
        except Exception as exc:
            return None, self._handler_failed(entry, msg, exc)

    async def _finish_late(
        self,
        msg: Message,
        route: Route[_Entry] | None,
        peer: Peer,
        late: list[tuple[_Entry, Any, bool]],
        value: Any,
        error: str | None,
    ) -> None:
        """Await what plain handlers returned, in order, then finish as :meth:`_run_sync`."""
        for entry, result, answers in late:
            try:
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                failure = self._handler_failed(entry, msg, exc)
                if answers:
                    error = error or failure
                continue
            if answers and value is None:
                value = result
        self._finish(msg, route, peer, value, error)

    def _finish(
        self, msg: Message, route: Route[_Entry] | None, peer: Peer, value: Any, error: str | None
    ) -> None:
        headers = msg.headers
        if route is None and not self._router.catch_all:
            self._drop("no_route", _no_handler(headers))
        else:
            self.stats.handled += 1
        reply_to = headers.get("replyTo")
        if (
            reply_to is not None
            and self._can_reply
            and (route is not None or self._answers_unrouted)
        ):
            self._reply(msg, route, peer, str(reply_to), value, error)
        if self._can_ack and "port" in headers:
            target = _protocol.ack_target(msg)
            if target is not None:
                self._spawn(self._acknowledge(msg, target, peer))

    def _reply(
        self,
        msg: Message,
        route: Route[_Entry] | None,
        peer: Peer,
        reply_to: str,
        value: Any,
        error: str | None,
    ) -> None:
        if error is None and route is None:
            error = _no_handler(msg.headers)
        if error is None:
            try:
                data = _protocol.reply(msg, value)
            except MessageError as exc:
                error = f"the handler's return value cannot be sent: {exc}"
        limit = self._limit
        if error is None and limit is not None and len(data) > limit:
            error = (
                f"the reply is {len(data)} bytes encoded; "
                f"{self.transport.name} carries at most {limit} bytes in one message"
            )
        if error is not None:
            data = _protocol.error_reply(msg, error)
        try:
            peer.send(data, reply_to)
        except TransportError as exc:
            self._drop("reply_failed", f"reply to {msg.id}: {exc}")
            return
        self.stats.replies_sent += 1

    async def _acknowledge(self, msg: Message, target: tuple[str, int], peer: Peer) -> None:
        failure = await self._acks.send(msg, target, peer)
        if failure is None:
            self.stats.acks_sent += 1
        else:
            self._drop(*failure)

    # -- bookkeeping ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        # The loop is kept from start(): asyncio.get_running_loop() makes a getpid system call.
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._in_flight += 1
        if self._in_flight >= self._max_concurrency and not self._paused:
            self._paused = True
            if self._listener is not None:
                self._listener.pause_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._logger.log(logging.ERROR, "distro: internal error while handling: %r", exc)
        if self._paused and self._in_flight < self._max_concurrency:
            while self._backlog and self._in_flight < self._max_concurrency:
                data, peer = self._backlog.popleft()
                self._dispatch(data, peer)
            if self._in_flight < self._max_concurrency and self._state is _State.OPEN:
                self._paused = False
                if self._listener is not None:
                    self._listener.resume_reading()

    def _drop(self, reason: str, detail: str) -> None:
        dropped = self.stats.dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        self._quiet.log(reason, logging.WARNING, "distro: dropped (%s): %s", reason, detail)


def _no_handler(headers: dict[str, Any]) -> str:
    return f"no handler for {headers.get('verb') or 'GET'} {headers['uri']}"
