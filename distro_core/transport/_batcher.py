"""The write batcher: frames written in one event-loop iteration go out together at its end.

A service that sends a burst (a loop of ``await client.send(...)``, a handler answering many
requests) would otherwise make one system call per frame. The batcher queues what is written
while the loop iteration runs and hands it to the transport's ``write`` once, when the
iteration ends (``loop.call_soon``), or sooner when ``flush_at`` bytes are queued or the
socket pushes back. Write back-pressure is kept here too: the transport forwards asyncio's
``pause_writing``/``resume_writing`` and a sender awaits :meth:`WriteBatcher.drain`, so memory
stays bounded by the socket's buffer plus ``flush_at``.

A socket that refuses rather than buffers (ZeroMQ at its high-water mark, sent to with
``NOBLOCK``) has its ``write`` return how many frames it took: the batcher keeps the rest, in
order, and writes them first when the transport calls ``resume_writing``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .._exceptions import ConnectionError

__all__ = ["FLUSH_AT", "WriteBatcher"]

FLUSH_AT = 65536
"""Bytes queued within one loop iteration after which they are written at once."""


class WriteBatcher:
    """Queues frames and writes them in one call at the end of the loop iteration.

    :param loop: the event loop the transport runs on.
    :param write: writes a list of queued items at once (``transport.writelines``, a join
        and ``transport.write``, or a loop of non-blocking sends); never called with an empty
        list, never after :meth:`lost`. It returns None when it wrote them all. A socket that
        refuses more (a non-blocking send met a full queue) returns how many it wrote: the
        batcher keeps the rest at the front of its queue and counts as paused
        (:attr:`write_paused`) until the transport calls :meth:`resume_writing`, which writes
        them first; meanwhile nothing else reaches ``write``.
    :param first: when given, the first frame of each iteration is passed to it at once
        instead of being queued (lowest latency for a lone message; the rest of the burst is
        still batched). ``tcp`` does this: a lone reply does not wait for the iteration to end.
    :param flush_at: queued bytes past which :meth:`write` flushes at once.
    """

    __slots__ = (
        "_error",
        "_first",
        "_flush_at",
        "_loop",
        "_queue",
        "_scheduled",
        "_size",
        "_stalled",
        "_waiters",
        "_write",
        "write_paused",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[list[bytes]], int | None],
        *,
        first: Callable[[bytes], None] | None = None,
        flush_at: int = FLUSH_AT,
    ) -> None:
        self._loop = loop
        self._write = write
        self._first = first
        self._flush_at = flush_at
        self._queue: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._waiters: list[asyncio.Future[None]] = []
        self._error: BaseException | None = None
        self._stalled = False  # ``write`` took part of a flush: keep the rest until resumed
        self.write_paused = False
        """True while the socket pushes back (between ``pause_writing`` and
        ``resume_writing``)."""

    @property
    def queued(self) -> int:
        """Bytes queued and not yet handed to ``write``."""
        return self._size

    @property
    def congested(self) -> bool:
        """Whether a sender should :meth:`drain` before writing more."""
        return self.write_paused

    def write(self, data: bytes) -> None:
        """Queue ``data`` (or write it at once as the iteration's first frame, see ``first``)."""
        if self._scheduled:
            self._queue.append(data)
            self._size += len(data)
            if self._size >= self._flush_at or self.write_paused:
                self.flush()
            return
        if self._error is not None:
            return  # lost: the transport's send raises before writing; late writes vanish
        self._scheduled = True
        self._loop.call_soon(self._end_of_iteration)
        if self._first is not None and not self._stalled:
            self._first(data)
        else:
            self._queue.append(data)
            self._size += len(data)

    def write_parts(self, parts: tuple[bytes, ...], size: int) -> None:
        """Queue several items that belong together (a command's pieces); ``size`` counts
        towards ``flush_at``. Never goes through ``first``."""
        if not self._scheduled:
            if self._error is not None:
                return
            self._scheduled = True
            self._loop.call_soon(self._end_of_iteration)
        self._queue += parts
        self._size += size
        if self._size >= self._flush_at or self.write_paused:
            self.flush()

    def _end_of_iteration(self) -> None:
        self._scheduled = False
        if self._queue:
            self.flush()

    def flush(self) -> None:
        """Write everything queued now, in one ``write`` call (none while ``write`` has
        refused some and :meth:`resume_writing` has not been called since)."""
        queue = self._queue
        if not queue or self._stalled:
            return
        self._queue = []
        self._size = 0
        if self._error is None:
            written = self._write(queue)
            if written is not None and written < len(queue) and self._error is None:
                self._keep(queue[written:])

    def _keep(self, rest: list[bytes]) -> None:
        """Put back what ``write`` refused, ahead of anything queued meanwhile."""
        rest += self._queue
        self._queue = rest
        self._size = sum(map(len, rest))
        self._stalled = True
        self.write_paused = True

    # -- back-pressure ------------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The socket's buffer is full (forward ``asyncio.Protocol.pause_writing`` here)."""
        self.write_paused = True

    def resume_writing(self) -> None:
        """The socket takes data again (forward ``asyncio.Protocol.resume_writing`` here).

        What ``write`` refused is written now; if the socket refuses some again, the batcher
        stays paused and senders waiting in :meth:`drain` go on waiting."""
        self.write_paused = False
        if self._stalled:
            self._stalled = False
            self.flush()
            if self.write_paused:
                return
        self._wake(None)

    async def drain(self, timeout: float | None = None) -> None:
        """Write what is queued and, while the socket pushes back, wait until it takes more.

        :param timeout: the longest wait, or None for no limit.
        :raises ConnectionError: the link was lost (the error :meth:`lost` was given), or the
            peer took nothing for ``timeout`` seconds.
        """
        self.flush()
        if self._error is not None:
            raise self._error
        if not self.write_paused:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        if timeout is None:
            await waiter
            return
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError as exc:
            raise ConnectionError(f"the peer took no data for {timeout:g}s") from exc
        finally:
            # Given up: a later lost() must not set an error nobody will retrieve.
            if not waiter.done():
                waiter.cancel()

    def lost(self, error: BaseException) -> int:
        """The link is gone: discard what is queued, fail every :meth:`drain` with ``error``
        and write nothing more.

        :returns: how many queued items were discarded (a transport logs or counts them).
        """
        count = len(self._queue)
        self._error = error
        self._queue = []
        self._size = 0
        self._stalled = False
        self._wake(error)
        return count

    @property
    def error(self) -> BaseException | None:
        """The error the link was lost with, or None while it is up."""
        return self._error

    def _wake(self, error: BaseException | None) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
