"""A server's middleware path: installed by :meth:`Server.start` when its chain has server-side
hooks, in place of the server's own ``frame_received`` and ``_finish`` (instance attributes,
so that a server without middleware keeps its path unchanged, to the byte code).

Per message it builds one :class:`~distro_core._middleware.Incoming` and one
:class:`_Carrier`: the peer the message is dispatched with, which sends every frame back through
the ``outgoing`` hooks, hashes and compares equal as the frame's own peer (the scheduler's
per-peer bookkeeping is unchanged) and settles, so that the server tells it, once per frame, how
the message ended: ``handled`` hooks run for every message ``received`` saw, handled or not
(``ctx.dropped`` then says why not).
"""

from __future__ import annotations

import contextvars
import logging
from typing import TYPE_CHECKING, Any

from ._dispatch import Handling, run_plain
from ._exceptions import MessageError
from ._logging import Log, Logger, RateLimitedLog
from ._message import new_message, parse_parts
from ._middleware import Chain, Incoming, Refuse
from ._protocol import HANDLER_ERROR, error_reply
from ._transport import Outcome, Peer

if TYPE_CHECKING:
    from ._message import Message
    from ._server import Server

__all__ = ["MIDDLEWARE_ERROR", "ServerMiddleware", "install"]

MIDDLEWARE_ERROR = "middleware_error"
"""The drop reason of a middleware that raised something other than Refuse."""


class ServerMiddleware:
    """The middleware path of one server (see the module docstring)."""

    __slots__ = ("_chain", "_finish", "_handled", "_log", "_out", "_received", "_server")

    def __init__(self, server: Server, chain: Chain, logger: Logger) -> None:
        self._server = server
        self._chain = chain
        self._received = chain.received
        self._handled = tuple(reversed(chain.handled))  # the first registered is outermost
        self._out = self.out if chain.outgoing else None
        self._log = RateLimitedLog(Log(logger, transport=server.transport.name))
        self._finish = type(server)._finish  # the server's own, called after the hooks

    # -- the replacements -----------------------------------------------------------------

    def frame_received(self, data: bytes, peer: Peer) -> None:
        """The server's :meth:`~distro_core.Server.frame_received`, through the chain."""
        server = self._server
        server.stats.received += 1
        if not server.is_serving:
            server._replies.closing_frame(data, _carrier(peer, None, self))
            return
        try:
            if self._chain.uses_context:
                contextvars.copy_context().run(self._dispatch, data, peer)
            else:
                self._dispatch(data, peer)
        except Exception as exc:  # the server's own bug: never the transport's problem
            server._log.internal_error(exc)
            server._confirmed.abandon(data)

    def finish(self, msg: Message, route: Any, peer: Peer, done: Any, data: bytes) -> None:
        """The server's ``_finish``: the ``handled`` hooks, then the server's own."""
        server = self._server
        if type(done) is Handling and done.late:
            self._finish(server, msg, route, peer, done, data)
            return
        ctx = peer.ctx if type(peer) is _Carrier else None
        if ctx is not None and not ctx.over:
            if type(done) is Handling:
                ctx.value, ctx.error, ctx.exception = done.value, done.error, done.exc
                ctx.failed = done.failed
            else:
                ctx.value = done
            if route is None and not server._router.catch_all:
                ctx.dropped = "no_route"
            self.handled(ctx)
        self._finish(server, msg, route, peer, done, data)

    # -- the parts ------------------------------------------------------------------------

    def _dispatch(self, data: bytes, peer: Peer) -> None:
        # Server._dispatch with the hooks: kept in step with it (same order of checks).
        server = self._server
        try:
            id, headers, payload = parse_parts(data)
        except MessageError as exc:
            server._refuse(_carrier(peer, None, self), "invalid", f"from {peer.host}: {exc}")
            return
        identity = peer.identity
        route, params = server._router.match(headers.get("verb"), headers["uri"])
        msg = new_message(id, headers, payload, params or {}, None, identity)
        ctx = _Context(msg, data)
        if route is not None:
            ctx.route = route.pattern
        carrier = _carrier(peer, ctx, self)
        for hook in self._received:
            try:
                hook(ctx)
            except Refuse as exc:
                self._refused(msg, carrier, exc)
                return
            except Exception as exc:
                self._failed_before(msg, carrier, exc, hook)
                return
        msg = ctx.message
        headers = msg.headers
        if "confirm" in headers:
            confirming = server._confirmed.begin(id, headers, peer, data)
            if confirming is None:
                ctx.dropped = "repeat"
                self.handled(ctx)
                return
            if confirming is not peer:
                carrier = _carrier(confirming, ctx, self)
        if route is None:
            handlers: tuple[Any, ...] = ()
            any_async = server._catch_all_async
        else:
            handlers = route.handlers
            any_async = server._catch_all_async or route.meta is True
        job = (msg, route, handlers, carrier, data)
        if any_async:
            if server._sched.start(carrier):
                server._unstarted += 1
                server._spawn(server._run_async(*job), carrier)
            else:
                server._hold(job, True)
        elif server._unstarted:
            if carrier in server._waiting:
                server._hold(job, False)
            elif server._unstarted > server._sched.queued:
                server._unstarted += 1
                server._loop.call_soon(server._run_deferred, *job)
            else:
                done = run_plain(server._router.catch_all, handlers, msg, server._failed)
                self.finish(msg, route, carrier, done, data)
        else:
            done = run_plain(server._router.catch_all, handlers, msg, server._failed)
            self.finish(msg, route, carrier, done, data)

    def handled(self, ctx: _Context) -> None:
        """Run the ``handled`` hooks once for ``ctx``."""
        if ctx.over:
            return
        ctx.over = True
        for hook in self._handled:
            try:
                hook(ctx)
            except Exception as exc:
                self.failed(exc, hook, ctx.message.id)

    def out(self, frame: bytes) -> bytes:
        """``frame`` through the ``outgoing`` hooks, last registered first."""
        for hook in reversed(self._chain.outgoing):
            frame = hook(frame)
        return frame

    def out_quietly(self, frame: bytes) -> bytes | None:
        """:meth:`out`, or None (logged) when a hook raised: the frame is not sent."""
        try:
            return self.out(frame)
        except Exception as exc:
            self.failed(exc, None, "")
            return None

    def failed(self, exc: Exception, hook: Any, msg_id: str) -> None:
        """Count and log (with its traceback, rate-limited) a middleware that raised."""
        dropped = self._server.stats.dropped
        dropped[MIDDLEWARE_ERROR] = dropped.get(MIDDLEWARE_ERROR, 0) + 1
        name = getattr(hook, "__qualname__", "a middleware's outgoing hook")
        self._log.log(
            f"middleware {name} {type(exc).__qualname__}",
            logging.ERROR,
            "distro: middleware %s failed%s: %s: %s",
            name,
            f" on message {msg_id}" if msg_id else "",
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"event": "middleware_failed", "msg_id": msg_id, "reason": MIDDLEWARE_ERROR},
        )

    def _refused(self, msg: Message, carrier: _Carrier, exc: Refuse) -> None:
        server = self._server
        ctx = carrier.ctx
        assert ctx is not None
        ctx.dropped = exc.reason
        server._refuse(carrier, exc.reason, f"message {msg.id} from {carrier.host}: {exc.detail}")
        if exc.code is not None:
            self._answer(msg, carrier, exc.message, exc.code)

    def _failed_before(self, msg: Message, carrier: _Carrier, exc: Exception, hook: Any) -> None:
        ctx = carrier.ctx
        assert ctx is not None
        ctx.dropped = MIDDLEWARE_ERROR
        ctx.exception = exc
        self.failed(exc, hook, msg.id)
        self.handled(ctx)
        if carrier.settles:
            carrier.settle(Outcome.FAILED, f"middleware error: {type(exc).__name__}")
        self._answer(msg, carrier, f"internal error (message {msg.id})", HANDLER_ERROR)

    def _answer(self, msg: Message, carrier: _Carrier, text: str, code: str) -> None:
        server = self._server
        if "replyTo" in msg.headers and server._can_reply and server._sole:
            limit = len(carrier.ctx.frame) if server._spoofable and carrier.ctx else server._limit
            server._replies.send(msg, carrier, error_reply(msg, text, code, limit))


class _Context(Incoming):
    """:class:`Incoming` plus the server's bookkeeping."""

    __slots__ = ("over",)

    def __init__(self, message: Message, frame: bytes) -> None:
        # Incoming.__init__, inlined: one call fewer per message.
        self.message = message
        self.frame = frame
        self.state: dict[Any, Any] = {}
        self.value: Any = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.failed = False
        self.dropped: str | None = None
        self.route: str | None = None
        self.over = False


class _Carrier(Peer):
    """The peer a message goes through the server with (see the module docstring)."""

    __slots__ = ("_mw", "_peer", "ctx")

    settles = True

    def __init__(self, peer: Peer, ctx: _Context | None, mw: ServerMiddleware) -> None:
        self.host = peer.host  # Peer.__init__'s one line, without the call
        self._peer = peer
        self._mw = mw
        self.ctx = ctx

    @property
    def identity(self) -> str | None:  # type: ignore[override]
        """The frame's own peer's."""
        return self._peer.identity

    def __hash__(self) -> int:
        return hash(self._peer)

    def __eq__(self, other: object) -> bool:
        if type(other) is _Carrier:
            other = other._peer
        return self._peer == other

    def send(self, data: bytes, reply_to: str) -> None:
        """Send ``data`` through the ``outgoing`` hooks to the frame's own peer."""
        out = self._mw._out
        if out is not None:
            try:
                data = out(data)
            except Exception as exc:
                self._mw.failed(exc, None, self.ctx.message.id if self.ctx else "")
                return
        self._peer.send(data, reply_to)

    def settle(self, outcome: Outcome, detail: str | None = None) -> None:
        """The server is done with the frame: the ``handled`` hooks run if they have not (the
        handlers did not run), then the frame's own peer settles if it does."""
        ctx = self.ctx
        if ctx is not None and not ctx.over:
            if ctx.dropped is None:
                ctx.dropped = detail or outcome.value
            self._mw.handled(ctx)
        if self._peer.settles:
            self._peer.settle(outcome, detail)


_carrier = _Carrier


def install(server: Server, chain: Chain, logger: Logger) -> ServerMiddleware:
    """Put the middleware path in place on ``server`` (before its transport listens)."""
    mw = ServerMiddleware(server, chain, logger)
    server.frame_received = mw.frame_received  # type: ignore[method-assign]
    server._finish = mw.finish  # type: ignore[method-assign]
    if chain.outgoing:
        server._acks.outgoing = mw.out_quietly
    return mw
