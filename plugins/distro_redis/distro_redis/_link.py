"""Links to Redis: redis-py connects and authenticates, then the link speaks RESP2 itself.

redis-py does everything a connection needs before its first command (URL parsing, TCP, TLS or
unix sockets, AUTH, SELECT); the link then takes over the socket's asyncio transport, so that
publishing is a write of pre-encoded commands, batched once per loop iteration, and a subscriber
hands each pushed message to the core straight from ``data_received``: no task switch, no
per-message parsing through redis-py's generic reply machinery.

Two kinds of link:

* :class:`Publisher` writes PUBLISH commands through the kit's
  :class:`~distro_core.transport.WriteBatcher` (one ``writelines`` per loop iteration, write
  back-pressure) and counts Redis's replies (so a close can wait until everything sent was
  taken); a sender may watch one PUBLISH's reply (a request's: the number of subscribers that
  got it, or Redis's refusal), and an error reply nobody watched is kept for the next send to
  report.
* :class:`Subscriber` (SUBSCRIBE / PSUBSCRIBE) hands messages to the core (a server's through
  the kit's :class:`~distro_core.transport.FrameInlet`, which holds them while the core has
  paused reading), and tracks which subscriptions Redis confirmed.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import cast

import redis.exceptions
from redis.asyncio.connection import AbstractConnection

import distro_core as distro
from distro_core.transport import ErrorTable, FrameInlet, Peer, WriteBatcher, map_error

from ._channels import Subscriptions
from ._config import RedisConfig
from ._resp import CRLF, Decoder, ProtocolError, ReplyError, pack_command

__all__ = ["REDIS_ERRORS", "Publisher", "Subscriber", "connect", "log"]

log = logging.getLogger("distro.redis")

_ARGS_PER_COMMAND = 512

REDIS_ERRORS: ErrorTable = (
    (redis.exceptions.ConnectionError, distro.ConnectionError),  # wrong credentials included
    (redis.exceptions.TimeoutError, distro.ConnectionError),
    (asyncio.TimeoutError, distro.ConnectionError),  # not the builtin one before Python 3.11
    (OSError, distro.ConnectionError),  # a Redis that cannot be resolved cannot be reached
)
"""redis-py's exceptions (and the rest) as :func:`~distro_core.transport.map_error` maps them:
Redis cannot be reached or the link broke; anything else is a ``TransportError``."""


async def connect(config: RedisConfig, role: str) -> tuple[AbstractConnection, asyncio.Transport]:
    """Open and authenticate one connection with redis-py; return it and its socket transport.

    :param role: what the link is for, for error messages.
    :raises distro.ConnectionError: Redis cannot be reached (or refused the credentials) within
        ``config.connect_timeout``.
    """
    conn = config.connection_class(**config.connect_kwargs)
    try:
        await asyncio.wait_for(conn.connect(), config.connect_timeout)  # type: ignore[no-untyped-call]
    except Exception as exc:
        await _disconnect(conn)
        where = f"redis transport: cannot open the {role} link to Redis at {config.location}"
        if isinstance(exc, asyncio.TimeoutError) and not str(exc):
            where += f" (no answer within {config.connect_timeout:g}s)"
        raise map_error(exc, where, table=REDIS_ERRORS) from exc
    except BaseException:
        await _disconnect(conn)
        raise
    # redis-py keeps the socket's stream writer here; taking its transport over is what makes
    # the hot path lean (see the module docstring).
    writer = getattr(conn, "_writer", None)
    if not isinstance(writer, asyncio.StreamWriter):
        await _disconnect(conn)
        raise distro.TransportError(
            f"redis transport: this redis-py ({redis.__version__}) connection exposes no "
            "stream writer; install a redis-py release distro-redis supports (>=5)"
        )
    # A stream transport, but not always an asyncio.Transport: uvloop's are not subclasses.
    return conn, cast("asyncio.Transport", writer.transport)


async def _disconnect(conn: AbstractConnection) -> None:
    try:
        await conn.disconnect(nowait=True)
    except Exception as exc:  # closing is best effort; the socket is gone either way
        log.debug("redis transport: error while closing a link: %r", exc)


LostCallback = Callable[["_Link", "BaseException | None"], None]


class _Link(asyncio.Protocol):
    """One Redis connection, driven as an asyncio protocol."""

    def __init__(
        self, conn: AbstractConnection, transport: asyncio.Transport, on_lost: LostCallback
    ) -> None:
        self._conn = conn
        self._transport = transport
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self.closed = False
        self.lost: BaseException | None = None
        transport.set_protocol(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.lost = exc or self.lost or distro.ConnectionError("Redis closed the connection")
        self._lost()
        self._on_lost(self, self.lost)

    def eof_received(self) -> bool:
        return False

    def _lost(self) -> None:
        """Fail whatever waits on this link (subclasses)."""

    def _abort(self, error: BaseException) -> None:
        """Drop the link after a protocol violation."""
        log.error("redis transport: dropping a link: %s", error)
        self.lost = error
        self._transport.abort()

    async def aclose(self) -> None:
        """Close the socket; idempotent."""
        was_closed, self.closed = self.closed, True
        if not was_closed:
            self._lost()
        self._transport.close()
        await _disconnect(self._conn)


_RUNS_TRIMMED_AT = 64
"""A publisher forgets the channels of answered PUBLISHes once it has this many runs."""


def _first(run: tuple[int, bytes]) -> int:
    return run[0]


class Publisher(_Link):
    """A link that publishes: PUBLISH commands written in batches, replies counted.

    :ivar batcher: queues the commands of one loop iteration and writes them at its end (or
        at :data:`~distro_core.transport.FLUSH_AT` bytes); its ``congested`` says a sender
        should :meth:`drain`.
    """

    def __init__(
        self, conn: AbstractConnection, transport: asyncio.Transport, on_lost: LostCallback
    ) -> None:
        super().__init__(conn, transport, on_lost)
        self.batcher = WriteBatcher(self._loop, transport.writelines)
        self._write_parts = self.batcher.write_parts
        self._tail = b""
        self._settlers: list[asyncio.Future[None]] = []
        self._watchers: deque[tuple[int, Callable[[int | str], None]]] = deque()
        self.sent = 0
        self.answered = 0
        self.error: str | None = None
        self.unheard = 0
        """PUBLISHes nobody watched that Redis answered 0: no subscriber received them."""
        self.on_unheard: Callable[[bytes, int], None] | None = None
        """Called with a channel and how many more PUBLISHes to it reached no subscriber (one
        call per channel per read)."""
        # Which channel an unanswered PUBLISH went to, at the cost of one identity test per
        # PUBLISH: (number of the first PUBLISH, head) for each run of PUBLISHes with the same
        # head, from the run Redis answers next on.
        self._runs: list[tuple[int, bytes]] = []
        self._last_head = b""

    def publish(self, head: bytes, data: bytes) -> None:
        """Queue ``PUBLISH`` of ``data`` (``head`` from :func:`~._resp.publish_head`); it is
        written with everything else queued in this loop iteration."""
        self._write_parts((head, b"$%d\r\n" % len(data), data, CRLF), len(data))
        self.sent += 1
        if head is not self._last_head:
            self._new_run(head)

    def _new_run(self, head: bytes) -> None:
        self._last_head = head
        runs = self._runs
        if len(runs) >= _RUNS_TRIMMED_AT:
            # Forget the runs Redis has answered all of: keep the one its next answer is in.
            current = bisect.bisect_right(runs, self.answered + 1, key=_first) - 1
            if current > 0:
                del runs[:current]
        runs.append((self.sent, head))

    def channel_of(self, number: int) -> bytes:
        """The channel the ``number``-th PUBLISH (counting from 1) on this link went to, if
        Redis has not answered it before the last one that started a new run (``b"?"`` when
        not known)."""
        index = bisect.bisect_right(self._runs, number, key=_first) - 1
        if index < 0:
            return b"?"
        # A head is "*3\r\n$7\r\nPUBLISH\r\n$<n>\r\n<channel>\r\n".
        parts = self._runs[index][1].split(CRLF, 4)
        return parts[4][:-2] if len(parts) == 5 else b"?"

    def watch(self, callback: Callable[[int | str], None]) -> None:
        """Call ``callback`` with Redis's reply to the last PUBLISH queued: the number of
        subscribers that received it, or the error text."""
        self._watchers.append((self.sent, callback))

    @property
    def outstanding(self) -> int:
        """PUBLISH commands Redis has not answered yet."""
        return self.sent - self.answered

    async def drain(self, timeout: float) -> None:
        """Write what is queued and, while the socket pushes back, wait until it takes more.

        :raises distro.ConnectionError: the link broke, or Redis read nothing for ``timeout``.
        """
        try:
            await self.batcher.drain(timeout)
        except distro.ConnectionError as exc:
            if exc is self.batcher.error:
                raise
            raise distro.ConnectionError(f"redis transport: writing to Redis: {exc}") from exc

    async def settle(self, timeout: float) -> bool:
        """Write what is queued and wait until Redis answered every PUBLISH; False on time-out."""
        self.batcher.flush()
        if self.outstanding <= 0 or self.closed:
            return self.outstanding <= 0
        waiter = self._loop.create_future()
        self._settlers.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except (asyncio.TimeoutError, distro.TransportError):
            return False
        return True

    def pause_writing(self) -> None:
        self.batcher.pause_writing()

    def resume_writing(self) -> None:
        self.batcher.resume_writing()

    def _settled(self, error: BaseException | None = None) -> None:
        settlers, self._settlers = self._settlers, []
        for waiter in settlers:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def _lost(self) -> None:
        error = distro.ConnectionError("redis transport: the publisher link is closed")
        unwritten = self.batcher.queued
        self.batcher.lost(error)
        if unwritten:
            log.warning(
                "redis transport: the publisher link closed with %d bytes of PUBLISH unwritten",
                unwritten,
            )
        # Whether the unanswered PUBLISHes reached anyone is unknown: their watchers learn
        # nothing (a request then ends by its time-out or the reply link's loss).
        self._watchers.clear()
        self._settled(error)

    def data_received(self, data: bytes) -> None:
        # Replies to PUBLISH are one line each (":<n>" or "-<error>"): unless one is watched or
        # is an error, counting lines is all there is to do.
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if data[-1:] != b"\n":
            cut = data.rfind(b"\n") + 1
            self._tail = data[cut:]
            data = data[:cut]
        if self._watchers or b"-" in data:
            self._replies(data.split(b"\r\n")[:-1])
        else:
            before = self.answered
            self.answered += data.count(b"\n")
            if b":0\r" in data:  # a one-way PUBLISH no subscriber received (rare)
                lines = data.split(CRLF)
                self._unheard([before + i + 1 for i, line in enumerate(lines) if line == b":0"])
        if self._settlers and self.answered >= self.sent:
            self._settled()

    def _unheard(self, numbers: list[int]) -> None:
        """Count the PUBLISHes with these numbers that reached no subscriber and report them,
        per channel, to :attr:`on_unheard`."""
        if not numbers:
            return
        self.unheard += len(numbers)
        if self.on_unheard is None:
            return
        channels: dict[bytes, int] = {}
        for number in numbers:
            channel = self.channel_of(number)
            channels[channel] = channels.get(channel, 0) + 1
        for channel, count in channels.items():
            try:
                self.on_unheard(channel, count)
            except Exception:
                log.exception("redis transport: an unheard-PUBLISH callback failed")

    def _replies(self, lines: list[bytes]) -> None:
        watchers = self._watchers
        unheard: list[int] = []
        for line in lines:
            self.answered += 1
            value: int | str
            refused: str | None = None
            if line[:1] == b"-":
                value = refused = line[1:].decode("utf-8", "replace")
                log.error("redis transport: Redis refused a PUBLISH: %s", refused)
            else:
                try:
                    value = int(line[1:])
                except ValueError:
                    value = f"unexpected reply {line[:40]!r}"
            watcher = None
            while watchers and watchers[0][0] <= self.answered:
                seq, callback = watchers.popleft()
                if seq == self.answered:
                    watcher = callback
            if watcher is not None:
                try:
                    watcher(value)
                except Exception:
                    log.exception("redis transport: a PUBLISH watcher failed")
            elif refused is not None:
                # Nobody waits for this PUBLISH's answer (a one-way send): the next send
                # reports it.
                self.error = refused
            elif value == 0:
                unheard.append(self.answered)
        self._unheard(unheard)


class Subscriber(_Link):
    """A link that subscribes and hands each message's payload on: a server's to the core
    through ``inlet`` (which holds them while the core has paused reading), a client's
    (replies) to ``deliver``.

    :param deliver: a client's ``frame_received``.
    :param inlet: a server's inlet, and ``peer`` the peer every frame comes with.
    """

    def __init__(
        self,
        conn: AbstractConnection,
        transport: asyncio.Transport,
        on_lost: LostCallback,
        *,
        deliver: Callable[[bytes], None] | None = None,
        inlet: FrameInlet | None = None,
        peer: Peer | None = None,
    ) -> None:
        super().__init__(conn, transport, on_lost)
        self._sink: tuple[FrameInlet, Peer] | None = None
        self._deliver = deliver
        if inlet is not None and peer is not None and deliver is None:
            self._sink = (inlet, peer)
        elif deliver is None or inlet is not None or peer is not None:
            raise TypeError("a Subscriber takes deliver, or inlet and peer")
        self._decoder = Decoder()
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._refused: list[str] = []
        self.subs = Subscriptions()

    # -- commands ---------------------------------------------------------------------------

    def _command(self, name: bytes, names: Iterable[bytes]) -> None:
        items = sorted(names)
        for start in range(0, len(items), _ARGS_PER_COMMAND):
            self._transport.write(pack_command(name, *items[start : start + _ARGS_PER_COMMAND]))

    def change(
        self,
        add_channels: Iterable[bytes] = (),
        add_patterns: Iterable[bytes] = (),
        drop_channels: Iterable[bytes] = (),
        drop_patterns: Iterable[bytes] = (),
    ) -> None:
        """Send (P)SUBSCRIBE / (P)UNSUBSCRIBE; new subscriptions go first, so a message that
        matches both an old and a new one is never missed (:class:`Subscriptions` dedupes)."""
        if self.closed:
            return
        self._command(b"SUBSCRIBE", add_channels)
        self._command(b"PSUBSCRIBE", add_patterns)
        self._command(b"UNSUBSCRIBE", drop_channels)
        self._command(b"PUNSUBSCRIBE", drop_patterns)

    async def sync(self, timeout: float) -> None:
        """Wait until Redis has processed every command sent so far.

        :raises distro.TransportError: Redis refused a subscription (an ACL, say).
        :raises distro.ConnectionError: the link broke or Redis did not answer in time.
        """
        if self.closed:
            raise distro.ConnectionError("redis transport: the subscriber link is closed")
        waiter = self._loop.create_future()
        self._pongs.append(waiter)
        self._transport.write(pack_command(b"PING"))
        try:
            await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError as exc:
            raise distro.ConnectionError(
                f"redis transport: Redis did not confirm the subscriptions within {timeout:g}s"
            ) from exc
        if self._refused:
            refused, self._refused = self._refused, []
            raise distro.TransportError(f"redis transport: Redis refused: {'; '.join(refused)}")

    # -- flow control -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading the socket (Redis buffers what comes meanwhile)."""
        if not self.closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read the socket again."""
        if not self.closed:
            self._transport.resume_reading()

    # -- input ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._decoder.feed(data)
        except ProtocolError as exc:
            self._abort(exc)
            return
        subs = self.subs
        deliver = self._deliver
        frames: list[bytes] = []
        for reply in replies:
            if type(reply) is list and len(reply) >= 3:
                kind = reply[0]
                if kind == b"message":
                    payload = reply[2]
                elif kind == b"pmessage" and len(reply) == 4:
                    if not subs.owns(reply[1], reply[2]):  # type: ignore[arg-type]
                        continue
                    payload = reply[3]
                else:
                    if type(kind) is bytes and type(reply[1]) is bytes:
                        subs.confirmed(kind, reply[1])
                    continue
                if type(payload) is not bytes:
                    continue
                if deliver is None:
                    frames.append(payload)
                    continue
                try:
                    deliver(payload)  # a client's reply: no inlet, nothing to hold
                except Exception:
                    log.exception("redis transport: the receiver failed on a frame")
            elif isinstance(reply, ReplyError):
                self._refused.append(reply.message)
                log.error("redis transport: Redis refused a subscription: %s", reply.message)
            elif self._pongs and (
                (type(reply) is list and reply and reply[0] == b"pong") or reply == b"PONG"
            ):
                waiter = self._pongs.popleft()
                if not waiter.done():
                    waiter.set_result(None)
        sink = self._sink
        if not frames or sink is None:
            return
        # Confirmations and messages were taken in stream order above: each message's owner
        # was decided against the subscriptions active when Redis sent it. A read's messages
        # go to the core in one call (per message, only the inlet's loop).
        try:
            sink[0].deliver_all(frames, sink[1])
        except Exception:
            log.exception("redis transport: the receiver failed on a frame")

    def _lost(self) -> None:
        self.subs.reset()
        error = distro.ConnectionError("redis transport: the subscriber link was lost")
        while self._pongs:
            waiter = self._pongs.popleft()
            if not waiter.done():
                waiter.set_exception(error)
