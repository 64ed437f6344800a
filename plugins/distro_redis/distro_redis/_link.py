"""Links to Redis: redis-py connects and authenticates, then the link speaks RESP2 itself.

redis-py does everything a connection needs before its first command (URL parsing, TCP, TLS or
unix sockets, AUTH, SELECT); the link then takes over the socket's asyncio transport, so that
publishing is a write of pre-encoded commands, batched once per loop iteration, and a subscriber
hands each pushed message to the core straight from ``data_received``: no task switch, no
per-message parsing through redis-py's generic reply machinery.

Two kinds of link:

* :class:`Publisher` writes PUBLISH commands and counts Redis's replies (so a close can wait
  until everything sent was taken), remembering any error reply for the next send to report;
  a sender may watch one PUBLISH's reply, the number of subscribers that got it.
* :class:`Subscriber` (SUBSCRIBE / PSUBSCRIBE) delivers messages to a callback, tracks which
  subscriptions Redis confirmed, and honours pause/resume by pausing the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

import redis.exceptions
from redis.asyncio.connection import AbstractConnection

import distro_core as distro
from distro_core.transport import Peer

from ._channels import Subscriptions
from ._config import RedisConfig
from ._resp import CRLF, Decoder, ProtocolError, ReplyError, pack_command

__all__ = ["Publisher", "Subscriber", "connect", "log", "wrap"]

log = logging.getLogger("distro.redis")

HIGH_WATER = 1 << 20
"""Bytes queued by a publisher past which a send waits for the socket to drain."""

_ARGS_PER_COMMAND = 512

_CONNECTION_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncio.TimeoutError,
    OSError,
)


def wrap(exc: BaseException, context: str) -> distro.TransportError:
    """The distro error for a lower-layer one: ``ConnectionError`` when Redis cannot be
    reached or the link broke, ``TransportError`` otherwise. Raise it ``from exc``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, distro.TransportError):
        return exc
    if isinstance(exc, _CONNECTION_ERRORS):
        return distro.ConnectionError(f"{context}: {text}")
    return distro.TransportError(f"{context}: {text}")


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
        raise wrap(exc, where) from exc
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
    transport = writer.transport
    assert isinstance(transport, asyncio.Transport)
    return conn, transport


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


class Publisher(_Link):
    """A link that publishes: PUBLISH commands written in batches, replies counted."""

    def __init__(
        self, conn: AbstractConnection, transport: asyncio.Transport, on_lost: LostCallback
    ) -> None:
        super().__init__(conn, transport, on_lost)
        self._queue: list[bytes] = []
        self._queued = 0
        self._scheduled = False
        self._tail = b""
        self._write_paused = False
        self._waiters: list[asyncio.Future[None]] = []
        self._watchers: deque[tuple[int, Callable[[int | str], None]]] = deque()
        self.sent = 0
        self.answered = 0
        self.error: str | None = None

    def publish(self, head: bytes, data: bytes) -> None:
        """Queue ``PUBLISH`` of ``data`` (``head`` from :func:`~._resp.publish_head`); it is
        written with everything else queued in this loop iteration."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        self._queue += (head, b"$%d\r\n" % len(data), data, CRLF)
        self._queued += len(data)
        self.sent += 1

    def watch(self, callback: Callable[[int | str], None]) -> None:
        """Call ``callback`` with Redis's reply to the last PUBLISH queued: the number of
        subscribers that received it, or the error text."""
        self._watchers.append((self.sent, callback))

    @property
    def outstanding(self) -> int:
        """PUBLISH commands Redis has not answered yet."""
        return self.sent - self.answered

    @property
    def congested(self) -> bool:
        """Whether a sender should :meth:`drain` before queueing more."""
        return self._queued > HIGH_WATER or self._write_paused

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        self._queued = 0
        if not self.closed:
            self._transport.writelines(queue)

    async def drain(self, timeout: float) -> None:
        """Write what is queued and wait until the socket takes more.

        :raises distro.ConnectionError: the link broke, or Redis read nothing for ``timeout``.
        """
        self._flush()
        if not self._write_paused or self.closed:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError as exc:
            raise distro.ConnectionError(
                f"redis transport: Redis took no data for {timeout:g}s"
            ) from exc

    async def settle(self, timeout: float) -> bool:
        """Write what is queued and wait until Redis answered every PUBLISH; False on time-out."""
        self._flush()
        if self.outstanding <= 0 or self.closed:
            return self.outstanding <= 0
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except (asyncio.TimeoutError, distro.TransportError):
            return False
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    def _wake(self, error: BaseException | None = None) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    def _lost(self) -> None:
        self._queue = []
        self._queued = 0
        # Whether the unanswered PUBLISHes reached anyone is unknown: their watchers learn
        # nothing (a request then ends by its time-out or the reply link's loss).
        self._watchers.clear()
        self._wake(distro.ConnectionError("redis transport: the publisher link is closed"))

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
            self.answered += data.count(b"\n")
        if self.answered >= self.sent and self._waiters and not self._write_paused:
            self._wake()

    def _replies(self, lines: list[bytes]) -> None:
        watchers = self._watchers
        for line in lines:
            self.answered += 1
            value: int | str
            if line[:1] == b"-":
                value = self.error = line[1:].decode("utf-8", "replace")
                log.error("redis transport: Redis refused a PUBLISH: %s", value)
            else:
                try:
                    value = int(line[1:])
                except ValueError:
                    value = f"unexpected reply {line[:40]!r}"
            while watchers and watchers[0][0] <= self.answered:
                seq, callback = watchers.popleft()
                if seq == self.answered:
                    try:
                        callback(value)
                    except Exception:
                        log.exception("redis transport: a PUBLISH watcher failed")


class Subscriber(_Link):
    """A link that subscribes and delivers each message's payload to ``deliver``.

    :param deliver: called with the payload, or with the payload and ``peer`` when a peer is
        given (a server's ``frame_received``).
    """

    def __init__(
        self,
        conn: AbstractConnection,
        transport: asyncio.Transport,
        on_lost: LostCallback,
        deliver: Callable[..., None],
        peer: Peer | None = None,
    ) -> None:
        super().__init__(conn, transport, on_lost)
        self._decoder = Decoder()
        self._deliver = deliver
        self._peer = peer
        self._paused = False
        self._held: deque[bytes] = deque()
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

    def pause(self) -> None:
        """Stop delivering; the socket stops being read (Redis buffers what comes meanwhile)."""
        self._paused = True
        if not self.closed:
            self._transport.pause_reading()

    def resume(self) -> None:
        """Deliver what was held, then read the socket again."""
        self._paused = False
        held = self._held
        while held and not self._paused:
            self._take(held.popleft())
        if not self._paused and not self.closed:
            self._transport.resume_reading()

    # -- input ------------------------------------------------------------------------------

    def _take(self, payload: bytes) -> None:
        try:
            if self._peer is None:
                self._deliver(payload)
            else:
                self._deliver(payload, self._peer)
        except Exception:
            log.exception("redis transport: the receiver failed on a frame")

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._decoder.feed(data)
        except ProtocolError as exc:
            self._abort(exc)
            return
        deliver = self._deliver
        peer = self._peer
        subs = self.subs
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
                if self._paused:
                    self._held.append(payload)
                    continue
                try:
                    if peer is None:
                        deliver(payload)
                    else:
                        deliver(payload, peer)
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

    def _lost(self) -> None:
        self._held.clear()
        self.subs.reset()
        error = distro.ConnectionError("redis transport: the subscriber link was lost")
        while self._pongs:
            waiter = self._pongs.popleft()
            if not waiter.done():
                waiter.set_exception(error)
