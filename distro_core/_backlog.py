"""What ``client.send_nowait`` could not write at once: queued in order and sent by one task.

``send_nowait`` writes a frame straight to the connection when the link takes it without
waiting (:meth:`~distro_core.transport.Connection.send_nowait`). When it cannot (the socket
pushes back, the link is being made again, the transport has no way to write without waiting,
or a middleware runs around each send), the frame joins a :class:`Backlog`: one task sends the
backlog's frames in order with the transport's ``send``, and ``client.drain()`` waits for it.
A frame the transport refuses ends the backlog: it and every frame still queued behind it are
dropped, logged, and the error is raised by the next ``drain()`` or ``send_nowait()``, so that
nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from ._exceptions import DistroError, TransportError
from ._logging import Logger
from ._message import Message

__all__ = ["Backlog"]


class Backlog:
    """Frames waiting to be sent in order by one task.

    :param send: sends one frame (the transport's ``send``, or the members' for ``servers=``).
    :param sent: called after each frame ``send`` took.
    :param done: called once the backlog is empty (or failed): the client stops using it.
    """

    __slots__ = ("_done", "_error", "_frames", "_logger", "_send", "_sent", "_task")

    def __init__(
        self,
        send: Callable[[bytes, Message], Awaitable[None]],
        sent: Callable[[], None],
        done: Callable[[Backlog], None],
        logger: Logger,
    ) -> None:
        self._send = send
        self._sent = sent
        self._done = done
        self._logger = logger
        self._frames: collections.deque[tuple[bytes, Message]] = collections.deque()
        self._error: DistroError | None = None
        self._task: asyncio.Task[None] | None = None

    def push(self, data: bytes, msg: Message) -> None:
        """Queue one frame behind the others; the sending task starts if it is not running."""
        self._frames.append((data, msg))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def failed(self) -> bool:
        """Whether a frame was refused and the error not raised yet."""
        return self._error is not None

    async def _run(self) -> None:
        frames = self._frames
        try:
            while frames:
                data, msg = frames[0]
                await self._send(data, msg)
                frames.popleft()
                self._sent()
        except DistroError as exc:
            lost = len(frames)
            frames.clear()
            self._logger.log(logging.WARNING, "send_nowait: %d message(s) not sent: %s", lost, exc)
            self._error = TransportError(f"{lost} message(s) given to send_nowait not sent: {exc}")
            self._error.__cause__ = exc
        finally:
            self._done(self)

    async def drain(self) -> None:
        """Wait until every queued frame was sent.

        :raises TransportError: the transport refused one (the rest were dropped too).
        """
        task = self._task
        if task is not None:
            await asyncio.shield(task)
        self.raise_error()

    def raise_error(self) -> None:
        """Raise the error that ended the backlog, if any (once)."""
        error, self._error = self._error, None
        if error is not None:
            raise error
