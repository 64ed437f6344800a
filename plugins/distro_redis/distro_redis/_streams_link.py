"""Links for redis-streams, speaking RESP2 themselves as the ``redis`` transport's links do.

* :class:`Appender`: a client's XADD link. A :class:`~._link.Publisher` whose replies are
  stream ids (bulk strings) instead of integers: they are counted, not parsed, unless a request
  or a confirmed send (:meth:`Appender.stored`) watches one, or Redis refused one.
* :class:`Commander`: a server's general command link (XREADGROUP, XACK, XCLAIM, XPENDING...):
  commands written in batches, once per loop iteration, and every reply decoded and handed to
  the callback the command was sent with, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from redis.asyncio.connection import AbstractConnection

import distro_core as distro
from distro_core.transport import WriteBatcher

from ._link import LostCallback, Publisher, _Link, log
from ._resp import Decoder, ProtocolError, Reply, ReplyError

__all__ = ["LOST", "Appender", "Commander", "EntryDecoder", "ReplyCallback"]

ReplyCallback = Callable[[Reply], None]

LOST = ReplyError("LINK LOST: the link to Redis broke before it answered")
"""What a :class:`Commander` hands the callbacks of commands Redis never answered."""


class Appender(Publisher):
    """A client's link that appends to the stream: :meth:`publish` takes an XADD head from
    :func:`~._streams_config.xadd_head` instead of a PUBLISH head; Redis answers each with the
    new entry's id, or an error."""

    def __init__(
        self, conn: AbstractConnection, transport: asyncio.Transport, on_lost: LostCallback
    ) -> None:
        super().__init__(conn, transport, on_lost)
        self._storing: set[asyncio.Future[None]] = set()

    def stored(self) -> asyncio.Future[None]:
        """A future for the last XADD queued: done once Redis answered it with the entry's id
        (stored); failed with ``distro.TransportError`` when Redis refused it (its error text,
        e.g. OOM, WRONGTYPE, NOPERM), with ``distro.ConnectionError`` when the link broke
        before Redis answered (stored or not: unknown)."""
        future: asyncio.Future[None] = self._loop.create_future()
        if self.closed:
            future.set_exception(_broken())
            return future
        storing = self._storing
        storing.add(future)

        def answered(value: int | str) -> None:
            storing.discard(future)
            if future.done():  # the sender stopped waiting (its timeout)
                return
            if isinstance(value, str):
                future.set_exception(
                    distro.TransportError(
                        f"redis-streams transport: Redis refused to store it: {value}"
                    )
                )
            else:
                future.set_result(None)

        self.watch(answered)
        return future

    def _lost(self) -> None:
        storing, self._storing = self._storing, set()
        for future in storing:
            if not future.done():
                future.set_exception(_broken())
        super()._lost()

    def data_received(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if data[-1:] != b"\n":
            cut = data.rfind(b"\n") + 1
            self._tail = data[cut:]
            data = data[:cut]
        # Each reply is "$<n>" and the id (two lines), or one "-error" line: counting lines
        # minus "$" lines counts replies, however a read cuts them.
        if self._watchers or data[:1] == b"-" or b"\n-" in data:
            self._answers(data.split(b"\r\n")[:-1])
        else:
            lines = data.count(b"\n")
            self.answered += lines - data.count(b"\n$") - (data[:1] == b"$")
        if self._settlers and self.answered >= self.sent:
            self._settled()

    def _answers(self, lines: list[bytes]) -> None:
        watchers = self._watchers
        for line in lines:
            if line[:1] == b"$":
                continue
            self.answered += 1
            refused: str | None = None
            if line[:1] == b"-":
                refused = line[1:].decode("utf-8", "replace")
            watcher = None
            while watchers and watchers[0][0] <= self.answered:
                seq, callback = watchers.popleft()
                if seq == self.answered:
                    watcher = callback
            if refused is not None:
                # Logged where nobody is told (a one-way send; a request and a confirmed send
                # raise it to their caller, who may expect it).
                (log.info if watcher is not None else log.error)(
                    "redis-streams transport: Redis refused an XADD: %s", refused
                )
            if watcher is not None:
                try:
                    watcher(refused if refused is not None else 1)
                except Exception:
                    log.exception("redis-streams transport: an XADD watcher failed")
            elif refused is not None:
                self.error = refused


def _broken() -> distro.ConnectionError:
    return distro.ConnectionError(
        "redis-streams transport: the link to Redis broke before Redis answered the XADD "
        "(the message may or may not be stored)"
    )


class Commander(_Link):
    """A link for any commands: each reply goes to its command's callback, in order.

    :ivar batcher: queues the commands of one loop iteration (see the kit's WriteBatcher).
    """

    def __init__(
        self,
        conn: AbstractConnection,
        transport: asyncio.Transport,
        on_lost: LostCallback,
        decoder: Decoder | None = None,
    ) -> None:
        super().__init__(conn, transport, on_lost)
        self.batcher = WriteBatcher(self._loop, transport.writelines)
        self._write = self.batcher.write
        self._decoder = decoder or Decoder()
        self._callbacks: deque[ReplyCallback | None] = deque()

    @property
    def outstanding(self) -> int:
        """Commands Redis has not answered yet."""
        return len(self._callbacks)

    def send(self, data: bytes, callback: ReplyCallback | None = None) -> None:
        """Queue one encoded command; ``callback`` gets its reply (:data:`LOST` if the link
        breaks first). A closed link answers at once with :data:`LOST`."""
        if self.closed:
            if callback is not None:
                callback(LOST)
            return
        self._callbacks.append(callback)
        self._write(data)

    async def call(self, data: bytes, timeout: float) -> Reply:
        """Send one command and wait for its reply.

        :raises distro.ConnectionError: the link broke, or no reply came within ``timeout``.
        """
        waiter: asyncio.Future[Reply] = self._loop.create_future()

        def answered(reply: Reply) -> None:
            if not waiter.done():
                waiter.set_result(reply)

        self.send(data, answered)
        try:
            reply = await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError as exc:
            raise distro.ConnectionError(
                f"redis-streams transport: Redis did not answer within {timeout:g}s"
            ) from exc
        if reply is LOST:
            raise distro.ConnectionError("redis-streams transport: the link to Redis broke")
        return reply

    async def settle(self, timeout: float) -> bool:
        """Write what is queued and wait (bounded) until Redis answered everything sent."""
        self.batcher.flush()
        if not self._callbacks or self.closed:
            return not self._callbacks
        try:
            await self.call(b"*1\r\n$4\r\nPING\r\n", timeout)
        except distro.ConnectionError:
            return False
        return True

    def abort(self) -> None:
        """Drop the link at once (what Redis has not answered gets :data:`LOST`)."""
        self._transport.abort()

    def pause_writing(self) -> None:
        self.batcher.pause_writing()

    def resume_writing(self) -> None:
        self.batcher.resume_writing()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._decoder.feed(data)
        except ProtocolError as exc:
            self._abort(exc)
            return
        callbacks = self._callbacks
        for reply in replies:
            if not callbacks:
                self._abort(ProtocolError("Redis sent a reply to no command"))
                return
            callback = callbacks.popleft()
            if callback is None:
                if isinstance(reply, ReplyError):
                    log.warning("redis-streams transport: Redis refused a command: %s", reply)
                continue
            try:
                callback(reply)
            except Exception:
                log.exception("redis-streams transport: a reply callback failed")

    def _lost(self) -> None:
        self.batcher.lost(distro.ConnectionError("redis-streams transport: the link is closed"))
        callbacks, self._callbacks = self._callbacks, deque()
        for callback in callbacks:
            if callback is not None:
                try:
                    callback(LOST)
                except Exception:
                    log.exception("redis-streams transport: a reply callback failed")


_READ_REPLY = b"*1\r\n*2\r\n$"
_ENTRY = b"*2\r\n$"
_CH = b"\r\n*4\r\n$2\r\nch\r\n$"  # after an id: two fields, the first "ch"
_MSG = b"\r\n$3\r\nmsg\r\n$"  # after the channel: the second, "msg"


class EntryDecoder(Decoder):
    """A :class:`~._resp.Decoder` with a fast path for the replies a reader link gets: an
    XREAD/XREADGROUP reply of one stream whose entries have the usual two fields becomes
    ``[[key, [(id, channel, frame), ...]]]`` (tuples, not nested lists), without the general
    parser's recursion; anything else (or a reply not complete yet) goes the general way."""

    __slots__ = ()

    def _parse(self, data: bytes, pos: int, depth: int = 0) -> tuple[Reply, int]:
        if depth == 0 and data.startswith(_READ_REPLY, pos):
            try:
                fast = _read_reply(data, pos + 9)
            except ValueError:
                fast = None
            if fast is not None:
                return fast
        return super()._parse(data, pos, depth)


def _read_reply(data: bytes, cursor: int) -> tuple[Reply, int] | None:
    """Parse ``[[key, [entry...]]]`` from just past the key's ``$``; None when unusual."""
    find = data.find
    end = find(b"\r\n", cursor)
    if end < 0:
        return None
    start = end + 2
    stop = start + int(data[cursor:end])
    key = data[start:stop]
    if not data.startswith(b"\r\n*", stop):
        return None
    end = find(b"\r\n", stop + 3)
    if end < 0:
        return None
    count = int(data[stop + 3 : end])
    cursor = end + 2
    entries: list[Reply] = []
    append = entries.append
    for _ in range(count):
        if not data.startswith(_ENTRY, cursor):
            return None
        end = find(b"\r\n", cursor + 5)
        if end < 0:
            return None
        start = end + 2
        stop = start + int(data[cursor + 5 : end])
        entry_id = data[start:stop]
        if not data.startswith(_CH, stop):
            return None
        cursor = stop + 15
        end = find(b"\r\n", cursor)
        if end < 0:
            return None
        start = end + 2
        stop = start + int(data[cursor:end])
        channel = data[start:stop]
        if not data.startswith(_MSG, stop):
            return None
        cursor = stop + 12
        end = find(b"\r\n", cursor)
        if end < 0:
            return None
        start = end + 2
        stop = start + int(data[cursor:end])
        if data[stop : stop + 2] != b"\r\n":
            return None  # cut off: the general parser waits for the rest
        append((entry_id, channel, data[start:stop]))  # type: ignore[arg-type]
        cursor = stop + 2
    return [[key, entries]], cursor
