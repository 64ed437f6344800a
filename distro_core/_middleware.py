"""Middleware: code that runs around a server's handling of each message and around a
client's sends and requests (docs/middleware.md).

A :class:`Middleware` overrides the hooks it needs; the others are never called. The
server or client assembles its :class:`Chain` once, when it starts or opens: for each hook, the
tuple of the middlewares that override it, in registration order. With no middleware (or none
overriding anything) there is no chain and the server and client keep their paths unchanged;
with one, each hook is a plain loop over a tuple, never a pluggy call.

Server side, per message:

* :meth:`Middleware.received` before the handlers (and before a confirmed send's repeat is
  recognised): read the message, add headers the handlers see, time it, or refuse it by
  raising :class:`Refuse` (counted ``stats.dropped[reason]``);
* :meth:`Middleware.handled` after the handlers, whatever they did (``ctx.failed``,
  ``ctx.error``, ``ctx.exception``, ``ctx.value``);
* :meth:`Middleware.outgoing` on every frame the server sends back (replies, error replies,
  RECEIVED).

Client side, per send or request:

* :meth:`Middleware.sending` before the frame is encoded (add headers with
  :meth:`Outgoing.set_header`);
* :meth:`Middleware.outgoing` on every frame sent (the final bytes, ``replyTo`` included);
* :meth:`Middleware.reply_received` on every frame that comes back, before it is matched to
  its request (raise :class:`Refuse` to drop it);
* :meth:`Middleware.finished` once the send returned or the request ended (``ctx.reply``,
  ``ctx.error``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from ._message import Message, new_message

__all__ = ["Chain", "Incoming", "Middleware", "Outgoing", "Refuse", "build_chain"]


class Refuse(Exception):
    """Raised by a middleware to refuse a message (or, on a client, a reply): it is dropped,
    counted under ``reason`` and logged (rate-limited) with ``detail``.

    :param reason: a short stable token (``"bad_signature"``), the key it is counted under
        (``server.stats.dropped``, ``client.stats.refused``).
    :param detail: one line for the log; never sent to the peer.
    :param code: on a server, a request refused with a ``code`` gets an error reply with that
        code and ``message``; without one (the default) it gets no reply at all, so a refusal
        tells the sender nothing.
    :param message: the error reply's text, with ``code``.
    """

    def __init__(
        self, reason: str, detail: str = "", *, code: str | None = None, message: str = ""
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.code = code
        self.message = message or reason


class Incoming:
    """One message a server received (or one reply a client received), as middlewares see it.

    :ivar message: the message (on a server, with the route's ``params``); replaced when a
        middleware adds a header.
    :ivar frame: the exact bytes it came in.
    :ivar state: a dict for middlewares to keep what they need between hooks (a start time,
        a span), keyed as they like.
    :ivar value: after the handlers: the value that answers (None if none).
    :ivar error: after the handlers: the text of the first route handler failure, or None.
    :ivar exception: after the handlers: that failure's exception, or None.
    :ivar failed: after the handlers: whether any handler raised.
    :ivar route: on a server, the pattern of the route that matched (``"/customer/{id}"``),
        or None: a label of bounded cardinality, unlike the uri.
    :ivar dropped: on a server, after: why the handlers did not run (the reason it was
        counted under: ``no_route``, ``overload``, ``closing``, a :class:`Refuse`'s reason...,
        or ``repeat`` for a confirmed send's repeat); None when they ran.
    """

    __slots__ = (
        "dropped",
        "error",
        "exception",
        "failed",
        "frame",
        "message",
        "route",
        "state",
        "value",
    )

    def __init__(self, message: Message, frame: bytes) -> None:
        self.message = message
        self.frame = frame
        self.state: dict[Any, Any] = {}
        self.value: Any = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.failed = False
        self.dropped: str | None = None
        self.route: str | None = None

    @property
    def headers(self) -> dict[str, Any]:
        """The message's headers (read them; add with :meth:`set_header`)."""
        return self.message.headers

    def set_header(self, name: str, value: Any) -> None:
        """Add (or replace) a header the handlers will see (a JSON value)."""
        msg = self.message
        self.message = new_message(
            msg.id, {**msg.headers, name: value}, msg.payload, msg.params, None, msg.peer_identity
        )

    def remove_headers(self, *names: str) -> None:
        """Remove headers the handlers need not see (those present)."""
        msg = self.message
        if any(name in msg.headers for name in names):
            headers = {k: v for k, v in msg.headers.items() if k not in names}
            self.message = new_message(
                msg.id, headers, msg.payload, msg.params, None, msg.peer_identity
            )


Kind = Literal["send", "confirm", "request"]


class Outgoing:
    """One send or request of a client, as middlewares see it.

    :ivar message: the message as the caller gave it.
    :ivar kind: ``"send"`` (one way), ``"confirm"`` (a confirmed send) or ``"request"``.
    :ivar added: the headers middlewares added (name -> value).
    :ivar state: a dict for middlewares to keep what they need between hooks.
    :ivar reply: once finished: the reply of a request, else None.
    :ivar error: once finished: the exception the call raised, or None.
    """

    __slots__ = ("added", "error", "kind", "message", "reply", "state")

    def __init__(self, message: Message, kind: Kind) -> None:
        self.message = message
        self.kind = kind
        self.added: dict[str, Any] = {}
        self.state: dict[Any, Any] = {}
        self.reply: Message | None = None
        self.error: BaseException | None = None

    @property
    def headers(self) -> dict[str, Any]:
        """The message's headers, as given (before the added ones)."""
        return self.message.headers

    def set_header(self, name: str, value: Any) -> None:
        """Add (or replace) a header of the message sent (a JSON value)."""
        self.added[name] = value

    def sent_message(self) -> Message:
        """The message with the added headers (the caller's own when none were added)."""
        if not self.added:
            return self.message
        from ._message import message as make

        msg = self.message
        return make({**msg.headers, **self.added}, msg.payload, id=msg.id)


class Middleware:
    """Base class of middlewares: override the hooks you need (see the module docstring and
    docs/middleware.md). A hook left as it is costs nothing: it is never called.

    Hooks run on the event loop, in registration order (``handled``, ``finished`` too); they
    must not block. On a server, a hook that raises anything but :class:`Refuse` is contained
    like a failing handler: logged with its traceback, counted
    ``stats.dropped["middleware_error"]``; raised in ``received`` the message is dropped (a
    request gets an error reply ``handler_error``), in ``outgoing`` the frame is not sent.
    On a client, what ``sending`` raises reaches the caller.

    :cvar uses_context: set it true when ``received`` sets context variables the handlers
        should see (a current span): the server then runs each message's dispatch in a copy of
        the context (:func:`contextvars.copy_context`), so what ``received`` sets reaches the
        handler, plain or async, and nothing needs to be reset afterwards.
    """

    uses_context: bool = False

    def received(self, ctx: Incoming) -> None:
        """Server: a message arrived, before its handlers run. Raise :class:`Refuse` to drop it."""

    def handled(self, ctx: Incoming) -> None:
        """Server: the handlers of a message returned (or raised: ``ctx.failed``)."""

    def outgoing(self, frame: bytes) -> bytes:
        """Server and client: a frame about to be sent; returns the frame to send instead."""
        return frame

    def sending(self, ctx: Outgoing) -> None:
        """Client: a send or request is starting (add headers with ``ctx.set_header``)."""

    def reply_received(self, ctx: Incoming) -> None:
        """Client: a frame came back, before it is matched with its request. Raise
        :class:`Refuse` to drop it (the request then times out)."""

    def finished(self, ctx: Outgoing) -> None:
        """Client: a send returned, or a request got its reply or failed (``ctx.error``)."""


_HOOKS = ("received", "handled", "outgoing", "sending", "reply_received", "finished")


def _overrides(mw: Middleware, hook: str) -> bool:
    return getattr(type(mw), hook, None) is not getattr(Middleware, hook)


class Chain:
    """The middlewares of one server or client, by hook: the bound methods of those that
    override it, in order. Built once (:func:`build_chain`).

    :ivar middleware: every middleware, in order.
    """

    __slots__ = (
        "finished",
        "handled",
        "middleware",
        "outgoing",
        "received",
        "reply_received",
        "sending",
        "uses_context",
    )

    def __init__(self, middleware: tuple[Middleware, ...]) -> None:
        self.middleware = middleware
        self.received = tuple(m.received for m in middleware if _overrides(m, "received"))
        self.handled = tuple(m.handled for m in middleware if _overrides(m, "handled"))
        self.outgoing = tuple(m.outgoing for m in middleware if _overrides(m, "outgoing"))
        self.sending = tuple(m.sending for m in middleware if _overrides(m, "sending"))
        self.reply_received = tuple(
            m.reply_received for m in middleware if _overrides(m, "reply_received")
        )
        self.finished = tuple(m.finished for m in middleware if _overrides(m, "finished"))
        self.uses_context = any(m.uses_context for m in middleware)

    @property
    def serves(self) -> bool:
        """Whether any server-side hook is overridden."""
        return bool(self.received or self.handled or self.outgoing)

    @property
    def calls(self) -> bool:
        """Whether any client-side hook is overridden."""
        return bool(self.sending or self.outgoing or self.reply_received or self.finished)

    def out(self, frame: bytes) -> bytes:
        """``frame`` through every ``outgoing`` hook, in order."""
        for hook in self.outgoing:
            frame = hook(frame)
        return frame


def check_middleware(middleware: object) -> tuple[Middleware, ...]:
    """The ``middleware=`` option, checked.

    :raises TypeError: not an iterable of :class:`Middleware` instances.
    """
    if middleware is None:
        return ()
    if isinstance(middleware, Middleware) or not isinstance(middleware, Iterable):
        raise TypeError(
            "middleware must be a list of distro_core.middleware.Middleware instances, "
            f"got {middleware!r:.80}"
        )
    items = tuple(middleware)
    for item in items:
        if not isinstance(item, Middleware):
            raise TypeError(f"middleware must hold Middleware instances, got {type(item).__name__}")
    return items


def build_chain(middleware: tuple[Middleware, ...]) -> Chain | None:
    """The chain of ``middleware``; None when no hook is overridden (nothing to call)."""
    if not middleware:
        return None
    chain = Chain(middleware)
    if not (chain.serves or chain.calls):
        return None
    return chain
