"""A server's reading of the stream: XREADGROUP (or XREAD without a group), claims, restarts.

One :class:`StreamReader` per server, with two links of its own: one that only reads (a
blocking XREADGROUP ties up its connection) and one for everything else (XACK, XCLAIM,
XPENDING, XAUTOCLAIM, dead letters, de-duplicated replies), which a group member's
:class:`~._streams_settle.Settler` uses to settle deliveries.

* **Reading.** The next read is sent as soon as a reply comes, before its entries are handed
  to the core, so Redis prepares one batch while the core handles the last. While the core has
  paused reading no read is sent (what an outstanding one brings waits in the inlet). Without
  data a read blocks in Redis for :data:`BLOCK_MS`: an idle member does not spin.
* **Filtering.** An entry whose channel matches no route of the server is not handed on: a
  server without a group skips it (its routes are its subscriptions, as over pub/sub); a group
  member acknowledges it and counts it dropped (``no_route``): members of a group serve the
  same routes.
* **Redelivery and claims** run beside the reads (:class:`~._streams_claims.Claims`): parked
  entries whose ``redelivery_delay`` has passed, entries of members that stopped, and the
  keep-alive of this member's own.
* **Restarts.** A member first reads its own pending entries (XREADGROUP from id 0: what it
  held when it stopped, under its stable consumer name), then new ones. A group or stream that
  disappeared (Redis restarted) is made again (XGROUP CREATE ... 0 MKSTREAM) when Redis
  answers NOGROUP, without a restart; a broken link is reconnected with back-off (the loss of
  the control link drops the reader too, so both come back together).
"""

from __future__ import annotations

import asyncio
from typing import Any

import distro_core as distro
from distro_core import transport as kit

from ._link import connect, log
from ._resp import Reply, ReplyError, pack_command
from ._streams_claims import Claims
from ._streams_config import StreamsConfig, routes_key
from ._streams_link import Commander, EntryDecoder
from ._streams_routes import RouteFilter
from ._streams_settle import Settler

__all__ = ["BLOCK_MS", "StreamReader"]

BLOCK_MS = 2000
"""How long one read waits in Redis for entries (an idle member sends one read per period)."""

RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
"""Back-off between reconnection attempts; the last repeats."""


class StreamReader:
    """Reads the stream for one server.

    :param config: the options.
    :param inlet: where frames go (the listener's, shared with its RECEIVED subscription).
    :param receiver: the core, for counting frames the transport drops.
    :param peer: the peer every frame comes with when the server is in no group.
    :param settler: a group member's (None without a group): makes each delivery's peer and
        settles it over this reader's control link.
    """

    def __init__(
        self,
        config: StreamsConfig,
        inlet: kit.FrameInlet,
        receiver: kit.Receiver,
        peer: kit.Peer,
        settler: Settler | None,
    ) -> None:
        self.config = config
        self._redis = config.redis
        self._inlet = inlet
        self._receiver = receiver
        self._peer = peer
        self._settler = settler
        self._loop = asyncio.get_running_loop()
        self._key = config.stream
        group = config.group
        self._group = group.encode() if group is not None else b""
        assert config.consumer is not None
        self._me = config.consumer.encode()
        self._filter = RouteFilter()
        self._reader: Commander | None = None
        self._control: Commander | None = None
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_id: bytes | None = None  # XREAD's position, without a group
        self._registered: frozenset[bytes] = frozenset()
        self.skipped = 0
        """Entries read and left to others: no route of this server matches them."""
        self.trimmed = 0
        """Pending entries the stream was trimmed of before they were handled."""
        self._read_new = pack_command(
            b"XREADGROUP", b"GROUP", self._group, self._me, b"COUNT",
            b"%d" % config.batch, b"BLOCK", b"%d" % BLOCK_MS, b"STREAMS", self._key, b">",
        )  # fmt: skip

    # -- routes -----------------------------------------------------------------------------

    def set_routes(self, names: frozenset[bytes], catch_all: bool) -> None:
        """Take entries for these route subscriptions (see :mod:`~._streams_routes`)."""
        self._filter = RouteFilter(names, catch_all)
        self._register(names)

    def _register(self, names: frozenset[bytes]) -> None:
        self._registered = names
        control = self._control
        if names and control is not None and not control.closed:
            control.send(self._registration(names))

    def _registration(self, names: frozenset[bytes]) -> bytes:
        fields = [part for name in sorted(names) for part in (name, b"1")]
        return pack_command(b"HSET", routes_key(self._redis.prefix), *fields)

    # -- opening and reconnecting -----------------------------------------------------------

    async def open(self) -> None:
        """Connect both links, make the group if it is not there, and start reading.

        :raises distro.ConnectionError: Redis cannot be reached.
        """
        await self._connect()
        self._runner = self._loop.create_task(self._run())
        if self._group:
            self._ticker = self._loop.create_task(Claims(self).run())

    async def _connect(self) -> None:
        timeout = self._redis.connect_timeout
        links = await asyncio.gather(
            connect(self._redis, "stream reader"),
            connect(self._redis, "stream control"),
            return_exceptions=True,
        )
        failure = next((r for r in links if isinstance(r, BaseException)), None)
        if failure is not None:
            for link in links:
                if not isinstance(link, BaseException):
                    link[1].close()
                    await link[0].disconnect(nowait=True)
            raise failure
        (rconn, rtransport), (cconn, ctransport) = links  # type: ignore[misc]
        self._reader = Commander(rconn, rtransport, self._lost, EntryDecoder())
        self._control = control = Commander(cconn, ctransport, self._lost)
        if self._group:
            await self._ensure_group(control, timeout)
        elif self._last_id is None:
            # A server without a group reads what is appended from its start on (and, after a
            # reconnection, from where it was: ids grow with Redis's clock, so this holds for
            # a stream made again after a restart too).
            self._last_id = b"0-0"
            last = await control.call(
                pack_command(b"XREVRANGE", self._key, b"+", b"-", b"COUNT", b"1"), timeout
            )
            if isinstance(last, list) and last and isinstance(last[0], list):
                newest = last[0][0]
                if isinstance(newest, bytes):
                    self._last_id = newest
        if self._registered:
            # Confirmed before the server is said to be started: a client's request right
            # after must find the routes.
            await control.call(self._registration(self._registered), timeout)
        if self._settler is not None:
            self._settler.control = control
            self._settler.flush()

    async def _ensure_group(self, control: Commander, timeout: float) -> None:
        # From id 0: messages appended before the group's first member started (or while
        # Redis was being restarted) are the group's too.
        reply = await control.call(
            pack_command(b"XGROUP", b"CREATE", self._key, self._group, b"0", b"MKSTREAM"),
            timeout,
        )
        if isinstance(reply, ReplyError) and not reply.message.startswith("BUSYGROUP"):
            raise distro.TransportError(
                f"redis-streams transport: cannot make group {self.config.group!r} on "
                f"{self._key.decode(errors='replace')}: {reply.message}"
            )

    def _lost(self, link: Any, exc: BaseException | None) -> None:
        if self._closing:
            return
        log.warning("redis-streams transport: a stream link to Redis broke (%s)", exc)
        reader = self._reader
        if link is self._control and reader is not None and not reader.closed:
            # The read loop reconnects both links; it notices a broken reader only.
            reader.abort()

    def _broken(self) -> bool:
        return any(link is None or link.closed for link in (self._reader, self._control))

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                if self._broken():
                    await self._close_links()
                    await self._connect()
                    log.warning(
                        "redis-streams transport: server on %s is back on Redis", self._redis.bus
                    )
                attempt = 0
                await self._read_loop()
            except distro.TransportError as exc:
                if self._closing:
                    return
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.debug("redis-streams transport: %s; reconnecting in %gs", exc, delay)
                await asyncio.sleep(delay)

    # -- reading ----------------------------------------------------------------------------

    def _read(self, start: bytes) -> asyncio.Future[Reply]:
        reader = self._reader
        assert reader is not None
        if self._group:
            data = (
                self._read_new
                if start == b">"
                else pack_command(
                    b"XREADGROUP",
                    b"GROUP",
                    self._group,
                    self._me,
                    b"COUNT",
                    b"%d" % self.config.batch,
                    b"STREAMS",
                    self._key,
                    start,
                )
            )
        else:
            data = pack_command(
                b"XREAD",
                b"COUNT",
                b"%d" % self.config.batch,
                b"BLOCK",
                b"%d" % BLOCK_MS,
                b"STREAMS",
                self._key,
                start,
            )
        return asyncio.ensure_future(
            reader.call(data, BLOCK_MS / 1000 + self._redis.connect_timeout)
        )

    async def _read_loop(self) -> None:
        # A member starts with its own pending entries (history, from id 0), then new ones.
        start = b"0-0" if self._group else (self._last_id or b"0-0")
        history = bool(self._group)
        pending: asyncio.Future[Reply] | None = None
        try:
            while not self._closing:
                if pending is None:
                    await self._resumed.wait()
                    pending = self._read(b">" if self._group and not history else start)
                reply = await pending
                pending = None
                if isinstance(reply, ReplyError):
                    await self._refused(reply)
                    continue
                entries = _entries(reply)
                if history:
                    if not entries:
                        history = False
                    else:
                        start = entries[-1][0]
                elif not self._group and entries:
                    start = self._last_id = entries[-1][0]
                if not self._inlet.paused and not history:
                    # Redis prepares the next batch while the core handles this one.
                    pending = self._read(b">" if self._group else start)
                if entries:
                    self._take(entries, 1 if not history else None)
                if self._inlet.paused:
                    self._resumed.clear()
        finally:
            if pending is not None and not pending.done():
                pending.cancel()

    async def _refused(self, reply: ReplyError) -> None:
        if reply.message.startswith("NOGROUP") and self._control is not None:
            log.warning(
                "redis-streams transport: group %r or its stream is gone (Redis restarted?); "
                "making it again",
                self.config.group,
            )
            await self._ensure_group(self._control, self._redis.connect_timeout)
            return
        log.error("redis-streams transport: Redis refused a read: %s", reply.message)
        await asyncio.sleep(RECONNECT_DELAYS[-1])

    def _take(self, entries: list[Any], deliveries: int | None, counts: Any = None) -> None:
        """Hand entries to the core (as a group member, each with a peer of its own)."""
        settler = self._settler
        inflight = settler.inflight if settler is not None else {}
        deliver = self._inlet.deliver
        matches = self._filter.matches
        for entry in entries:
            if type(entry) is tuple:  # the usual form, from the reader's fast path
                entry_id, channel, data = entry
                if entry_id in inflight:
                    continue  # still being handled here (read again after a reconnection)
            else:
                entry_id = entry[0]
                if entry_id in inflight:
                    continue
                fields = entry[1]
                if (
                    type(fields) is list
                    and len(fields) == 4
                    and fields[0] == b"ch"
                    and fields[2] == b"msg"
                ):
                    channel, data = fields[1], fields[3]
                else:
                    found = self._unusual(entry_id, fields)
                    if found is None:
                        continue
                    channel, data = found
            if not matches(channel):
                self.skipped += 1
                if settler is not None:
                    settler.ack(entry_id)
                    self._receiver.frame_dropped(
                        "no_route",
                        f"redis-streams transport: group {self.config.group!r} member "
                        f"{self.config.consumer!r} has no route for {channel!r:.80}",
                    )
                continue
            if settler is None:
                deliver(data, self._peer)
                continue
            if counts is not None:
                deliveries = counts.get(entry_id)
            deliver(data, settler.peer(entry_id, deliveries, data, channel))

    def _unusual(self, entry_id: bytes, fields: Any) -> tuple[bytes, bytes] | None:
        """The channel and frame of an entry not in the usual form, or None when it is not
        one to hand on (dropped and counted here, acknowledged)."""
        if fields is None:  # trimmed away while pending
            self.trimmed += 1
            self._ack_now(entry_id)
            self._receiver.frame_dropped(
                "trimmed", f"redis-streams transport: entry {entry_id!r} was trimmed, pending"
            )
            return None
        values: dict[bytes, Any] = {}
        if type(fields) is list:
            values = dict(zip(fields[::2], fields[1::2], strict=False))
        target = values.get(b"to")
        if target is not None and target != self._group:
            self.skipped += 1
            if self._group:
                self._ack_now(entry_id)
            return None  # a dead letter re-driven for another group
        data, channel = values.get(b"msg"), values.get(b"ch", b"")
        if type(data) is not bytes or type(channel) is not bytes:
            if self._group:
                self._ack_now(entry_id)
            self._receiver.frame_dropped(
                "invalid",
                f"redis-streams transport: entry {entry_id!r} on {self._key!r} has no "
                f"'msg' field: not a distro message ({fields!r:.80})",
            )
            return None
        return channel, data

    # -- flow control -----------------------------------------------------------------------

    def _ack_now(self, entry_id: bytes) -> None:
        if self._settler is not None:
            self._settler.ack(entry_id)

    def resume(self) -> None:
        """The core takes frames again: read again."""
        self._resumed.set()

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop reading, hand back what this member holds unfinished, close the links."""
        if self._closing:
            return
        self._closing = True
        self._resumed.set()
        tasks = [t for t in (self._runner, self._ticker) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()
        control = self._control
        settler = self._settler
        timeout = min(self._redis.connect_timeout, 2.0)
        if control is not None and not control.closed:
            if settler is not None:
                settler.flush()
                await settler.hand_back(timeout)
            await control.settle(timeout)
        if settler is not None:
            settler.closing = True
            settler.control = None
        await self._close_links()

    async def _close_links(self) -> None:
        for name in ("_reader", "_control"):
            link = getattr(self, name)
            setattr(self, name, None)
            if link is not None:
                await link.aclose()


def _entries(reply: Reply) -> list[Any]:
    """The entries of an XREAD/XREADGROUP reply (``[[key, [entry, ...]]]``, or nil)."""
    if type(reply) is list and reply:
        stream = reply[0]
        if type(stream) is list and len(stream) == 2 and type(stream[1]) is list:
            return stream[1]
    return []
