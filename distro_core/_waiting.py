"""How a client waits: for a free slot under ``max_pending`` (:class:`Slots`), for a reply
without cancelling it (:func:`wait`), and the errors a request raises for what its reply or its
transport reported (:func:`explained`)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from . import _protocol
from ._exceptions import ConnectionError, DistroError, RemoteError, RequestTimeout
from ._message import Message
from ._transport import RequestFailure

__all__ = ["Slots", "Unanswerable", "expire", "explained", "lost", "wait"]


class Slots:
    """Requests past ``max_pending`` wait here, in arrival order, for one to end.

    :param limit: how many requests may wait for replies at once.
    """

    __slots__ = ("limit", "waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def wait(
        self, loop: asyncio.AbstractEventLoop, msg_id: str, timeout: float, pending: Any
    ) -> float:
        """Wait until fewer than ``limit`` requests are ``pending``; returns the time left.

        :raises RequestTimeout: none ended within ``timeout``.
        """
        deadline = loop.time() + timeout
        while len(pending) >= self.limit:
            left = deadline - loop.time()
            if left <= 0:
                raise RequestTimeout(msg_id, timeout)
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                raise RequestTimeout(msg_id, timeout) from None
        return max(deadline - loop.time(), 1e-3)

    def wake_one(self) -> None:
        """A request ended: let the first one waiting go."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class Unanswerable(Exception):
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


def lost(where: str, exc: BaseException | None) -> ConnectionError:
    error = ConnectionError(f"lost the link to {where}: {exc}")
    if exc is not None:
        error.__cause__ = exc
    return error


def explained(exc: Unanswerable | RemoteError, msg: Message) -> DistroError:
    """The error a request raises for a failure its reply (or its transport) reported."""
    if isinstance(exc, Unanswerable):
        return exc.error_for(msg)
    if exc.remote:
        return exc
    # The server cut its text to fit a small request (no amplification over datagrams): say
    # what the code means, as far as this side can tell.
    return RemoteError(msg.id, _protocol.error_text(exc.code, msg), exc.code, exc.details)


async def wait(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], seconds: float
) -> bool:
    """Wait at most ``seconds`` for ``future``, without cancelling it; True once it is done."""
    if not future.done():
        waker: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waker.done():
                waker.set_result(None)

        timer = loop.call_later(seconds, wake)
        future.add_done_callback(wake)
        try:
            await waker
        finally:
            timer.cancel()
            future.remove_done_callback(wake)
    return future.done()


def expire(future: asyncio.Future[Any], msg_id: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(RequestTimeout(msg_id, timeout))
