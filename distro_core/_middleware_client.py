"""A client's middleware path: installed by :meth:`Client.open` when its chain has client-side
hooks, in place of the client's own ``send``, ``send_nowait``, ``request`` and
``frame_received`` (instance attributes: a client without middleware keeps its path
unchanged), and around its connections (every frame sent goes through the ``outgoing``
hooks)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._exceptions import MessageError, MessageTooLarge
from ._logging import Log, Logger, RateLimitedLog
from ._message import Message, parse
from ._middleware import Chain, Incoming, Kind, Outgoing, Refuse
from ._transport import ClientReceiver, Connection, Transport

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["ClientMiddleware", "install"]

MIDDLEWARE_ERROR = "middleware_error"


class ClientMiddleware:
    """The middleware path of one client (see the module docstring)."""

    __slots__ = ("_chain", "_client", "_finished", "_log", "_sending", "out")

    def __init__(self, client: Client, chain: Chain, logger: Logger) -> None:
        self._client = client
        self._chain = chain
        self._sending = chain.sending
        self._finished = tuple(reversed(chain.finished))  # the first registered is outermost
        outgoing = tuple(reversed(chain.outgoing))
        self._log = RateLimitedLog(Log(logger, transport=client.transport.name))

        def out(frame: bytes) -> bytes:
            for hook in outgoing:
                frame = hook(frame)
            return frame

        self.out = out

    def wrap(self, conn: Connection) -> Connection:
        """``conn``, its frames sent through the ``outgoing`` hooks (if any)."""
        if not self._chain.outgoing:
            return conn
        return OutConnection(conn, self.out, self._client.transport)

    def _start(self, msg: Message, kind: Kind) -> tuple[Outgoing, Message]:
        ctx = Outgoing(msg, kind)
        for hook in self._sending:
            hook(ctx)
        return ctx, ctx.sent_message()

    def _end(self, ctx: Outgoing) -> None:
        for hook in self._finished:
            try:
                hook(ctx)
            except Exception as exc:
                self._failed(exc, hook, ctx.message.id)

    async def send(self, msg: Message, *, confirm: bool = False, timeout: float = 5.0) -> None:
        """The client's :meth:`~distro_core.Client.send`, through the chain."""
        client = self._client
        send = type(client).send
        if not isinstance(msg, Message):
            await send(client, msg, confirm=confirm, timeout=timeout)  # raises the TypeError
            return
        ctx, sent = self._start(msg, "confirm" if confirm else "send")
        try:
            await send(client, sent, confirm=confirm, timeout=timeout)
        except BaseException as exc:
            ctx.error = exc
            self._end(ctx)
            raise
        self._end(ctx)

    def send_nowait(self, msg: Message) -> None:
        """The client's :meth:`~distro_core.Client.send_nowait`, through the chain: a one-way
        send (``ctx.kind`` ``"send"``), finished once the message was written or queued."""
        client = self._client
        send_nowait = type(client).send_nowait
        if not isinstance(msg, Message):
            send_nowait(client, msg)  # raises the TypeError
            return
        ctx, sent = self._start(msg, "send")
        try:
            send_nowait(client, sent)
        except BaseException as exc:
            ctx.error = exc
            self._end(ctx)
            raise
        self._end(ctx)

    async def request(self, msg: Message, timeout: float = 5.0) -> Message:
        """The client's :meth:`~distro_core.Client.request`, through the chain."""
        client = self._client
        request = type(client).request
        if not isinstance(msg, Message):
            return await request(client, msg, timeout)  # raises the TypeError
        ctx, sent = self._start(msg, "request")
        try:
            reply = await request(client, sent, timeout)
        except BaseException as exc:
            ctx.error = exc
            self._end(ctx)
            raise
        ctx.reply = reply
        self._end(ctx)
        return reply

    def frame_received(self, data: bytes) -> None:
        """The client's ``frame_received``: the ``reply_received`` hooks first."""
        client = self._client
        try:
            msg = parse(data)
        except MessageError:
            type(client).frame_received(client, data)  # counts and logs it
            return
        ctx = Incoming(msg, data)
        for hook in self._chain.reply_received:
            try:
                hook(ctx)
            except Refuse as exc:
                self._refused(exc.reason, f"reply {msg.id}: {exc.detail}")
                return
            except Exception as exc:
                self._failed(exc, hook, msg.id)
                return
        type(client).frame_received(client, data)

    def _refused(self, reason: str, detail: str) -> None:
        refused = self._client.stats.refused
        refused[reason] = refused.get(reason, 0) + 1
        self._log.log(
            reason,
            logging.WARNING,
            "distro client: refused (%s): %s",
            reason,
            detail,
            extra={"event": "refused", "reason": reason},
        )

    def _failed(self, exc: Exception, hook: Any, msg_id: str) -> None:
        refused = self._client.stats.refused
        refused[MIDDLEWARE_ERROR] = refused.get(MIDDLEWARE_ERROR, 0) + 1
        name = getattr(hook, "__qualname__", repr(hook))
        self._log.log(
            f"middleware {name} {type(exc).__qualname__}",
            logging.ERROR,
            "distro client: middleware %s failed on message %s: %s: %s",
            name,
            msg_id,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"event": "middleware_failed", "msg_id": msg_id},
        )


class OutConnection(Connection):
    """A connection whose frames go through the ``outgoing`` hooks first (and are checked
    against the transport's size limit again: a hook may make a frame larger)."""

    def __init__(self, conn: Connection, out: Any, transport: Transport) -> None:
        self.inner = conn
        self._out = out
        self._limit = transport.capabilities.max_message_size
        self._name = transport.name
        self.reply_to = conn.reply_to

    def _frame(self, data: bytes) -> bytes:
        data = self._out(data)
        if self._limit is not None and len(data) > self._limit:
            raise MessageTooLarge(len(data), self._limit, self._name)
        return data

    async def send(self, data: bytes, message: Message) -> None:
        """Send through the hooks."""
        await self.inner.send(self._frame(data), message)

    async def request(self, data: bytes, message: Message) -> None:
        """Send a request through the hooks."""
        await self.inner.request(self._frame(data), message)

    async def store(self, data: bytes, message: Message) -> None:
        """Store through the hooks."""
        await self.inner.store(self._frame(data), message)

    async def aclose(self) -> None:
        """Close the wrapped connection."""
        await self.inner.aclose()


class _OutTransport:
    """A member's transport whose connections go through the hooks (``servers=``)."""

    def __init__(self, transport: Transport, out: Any) -> None:
        self._transport = transport
        self._out = out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    async def connect(self, receiver: ClientReceiver, target: Any = None) -> Connection:
        conn = await self._transport.connect(receiver, target)
        return OutConnection(conn, self._out, self._transport)


def install(client: Client, chain: Chain, logger: Logger) -> ClientMiddleware:
    """Put the middleware path in place on ``client`` (before it connects)."""
    mw = ClientMiddleware(client, chain, logger)
    if chain.sending or chain.finished:
        client.send = mw.send  # type: ignore[method-assign]
        client.send_nowait = mw.send_nowait  # type: ignore[method-assign]
        client.request = mw.request  # type: ignore[method-assign]
    if chain.reply_received:
        client.frame_received = mw.frame_received  # type: ignore[method-assign]
    if chain.outgoing and client._members is not None:
        for member in client._members.members:
            member.transport = _OutTransport(member.transport, mw.out)  # type: ignore[assignment]
    return mw
