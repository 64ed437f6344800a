"""How a group member settles each delivery: acknowledge, park for redelivery, dead-letter.

Every entry a member hands to the core comes with a :class:`StreamPeer` of its own, which the
core settles once (contract v2), through the member's :class:`Settler`:

* HANDLED and DROPPED (not a message, no route): XACK, the ids of one loop iteration in one
  command.
* FAILED: the entry is parked under the :data:`~._streams_config.RETRY_CONSUMER` (XCLAIM
  JUSTID: its delivery count kept, its idle time reset); once ``redelivery_delay`` has passed,
  any member claims it again (see the reader's ticker), which counts a delivery. At
  ``max_deliveries`` it is appended instead to the group's dead-letter stream, with the error
  text, and acknowledged.
* RETURNED (the server was closing, or overloaded): parked with its delivery count set back
  by one (XCLAIM RETRYCOUNT), so a return costs no delivery.

A delivery whose count is not known (an entry claimed from another member, or re-read from the
member's own pending list) looks it up (XPENDING) before it is parked or dead-lettered: only
failures and returns pay that round trip.

Replies of a group member go out through a script that first marks the entry answered (``SET
NX``, kept ``reply_window`` seconds): an entry delivered twice is answered once, by the first
delivery that answers it (an error reply included); a redelivery still runs the handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import distro_core as distro
from distro_core import transport as kit

from ._link import log
from ._resp import Reply, ReplyError, pack_command
from ._streams_config import RETRY_CONSUMER, StreamsConfig, answered_key, dead_key
from ._streams_link import LOST, Commander

__all__ = ["Settler", "StreamPeer"]

_REPLY_SCRIPT = (
    b"if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) then "
    b"return redis.call('PUBLISH', ARGV[1], ARGV[2]) end return -1"
)
_RETRY = RETRY_CONSUMER.encode()


class StreamPeer(kit.Peer):
    """One delivery of one entry to a group member: the core settles it once.

    :ivar deliveries: how many times the entry has been delivered, this time included, or
        None when not known yet.
    """

    __slots__ = ("channel", "data", "deliveries", "id", "settler")

    settles = True

    def __init__(
        self,
        settler: Settler,
        entry_id: bytes,
        deliveries: int | None,
        data: bytes,
        channel: bytes,
    ) -> None:
        self.host = settler.bus
        self.settler = settler
        self.id = entry_id
        self.deliveries = deliveries
        self.data = data
        self.channel = channel

    def send(self, data: bytes, reply_to: str) -> None:
        self.settler.answer(self.id, data, reply_to)

    def settle(self, outcome: kit.Outcome, detail: str | None = None) -> None:
        try:
            self.settler.settled(self, outcome, detail)
        except Exception:
            log.exception("redis-streams transport: settling entry %r failed", self.id)


class Settler:
    """Acknowledges, parks and dead-letters the deliveries of one group member, over its
    control link (:attr:`control`, replaced when the reader reconnects).

    :param config: the options (``group`` set).
    :param receiver: the core, for counting what is dropped here.
    :param check_reply_to: raises if a ``replyTo`` is not a reply channel of the namespace.
    :ivar inflight: entry id -> when it was delivered (or last refreshed), for every entry
        handed to the core and not settled yet.
    """

    def __init__(
        self,
        config: StreamsConfig,
        receiver: kit.Receiver,
        check_reply_to: Callable[[str], None],
    ) -> None:
        assert config.group is not None
        self.config = config
        self.bus = config.redis.bus
        self.control: Commander | None = None
        self.inflight: dict[bytes, float] = {}
        self.closing = False
        self._check_reply_to = check_reply_to
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._key = config.stream
        self._group = config.group.encode()
        assert config.consumer is not None
        self._me = config.consumer.encode()
        self._acks: list[bytes] = []
        self._ack_scheduled = False
        self._answered = answered_key(config.redis.prefix, config.group)
        self._dead = dead_key(config.redis.prefix, config.group)
        self._reply_ttl = b"%d" % int(config.reply_window * 1000)

    def peer(
        self, entry_id: bytes, deliveries: int | None, data: bytes, channel: bytes
    ) -> StreamPeer:
        """The peer of one delivery, counted in flight until it settles."""
        self.inflight[entry_id] = self._loop.time()
        return StreamPeer(self, entry_id, deliveries, data, channel)

    # -- outcomes ---------------------------------------------------------------------------

    def settled(self, peer: StreamPeer, outcome: kit.Outcome, detail: str | None) -> None:
        """Acknowledge, park or dead-letter one delivery (see the module docstring)."""
        if outcome is kit.Outcome.HANDLED or outcome is kit.Outcome.DROPPED:
            self.inflight.pop(peer.id, None)
            self.ack(peer.id)
        elif outcome is kit.Outcome.FAILED:
            self._with_deliveries(peer, lambda: self._failed(peer, detail or "handler failed"))
        else:  # RETURNED: not taken (closing, overloaded); offered again, not counted
            self._with_deliveries(peer, lambda: self._park(peer, returned=True))

    def ack(self, entry_id: bytes) -> None:
        """Acknowledge ``entry_id`` with the others of this loop iteration."""
        self._acks.append(entry_id)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send the acknowledgements queued so far, in one XACK."""
        self._ack_scheduled = False
        ids, self._acks = self._acks, []
        control = self.control
        if not ids:
            return
        if control is None or control.closed:
            self._acks[:0] = ids  # sent once the link is back (XACK is idempotent)
            return

        def acked(reply: Reply) -> None:
            if reply is LOST and not self.closing:
                self._acks[:0] = ids

        control.send(pack_command(b"XACK", self._key, self._group, *ids), acked)

    def answer(self, entry_id: bytes, data: bytes, reply_to: str) -> None:
        """Publish the reply to the request in entry ``entry_id``, unless this group has
        answered that entry already (it was delivered before).

        :raises distro.TransportError: ``reply_to`` is not a reply channel of the namespace.
        :raises distro.ConnectionError: Redis is unreachable just now.
        """
        self._check_reply_to(reply_to)
        control = self.control
        if control is None or control.closed:
            raise distro.ConnectionError(
                f"redis-streams transport: Redis at {self.config.redis.location} is "
                "unreachable; reply dropped"
            )
        key = self._answered + entry_id
        command = pack_command(
            b"EVAL", _REPLY_SCRIPT, b"1", key, reply_to.encode(), data, self._reply_ttl
        )
        control.send(command)

    def _with_deliveries(self, peer: StreamPeer, then: Callable[[], None]) -> None:
        """Call ``then`` once the delivery count of ``peer``'s entry is known."""
        self.inflight.pop(peer.id, None)
        control = self.control
        if peer.deliveries is not None or control is None:
            then()
            return

        def found(reply: Reply) -> None:
            count = None
            if isinstance(reply, list) and reply and isinstance(reply[0], list):
                count = reply[0][3]
            peer.deliveries = count if isinstance(count, int) else 1
            then()

        pending = (b"IDLE", b"0", peer.id, peer.id, b"1")
        control.send(pack_command(b"XPENDING", self._key, self._group, *pending), found)

    def _failed(self, peer: StreamPeer, error: str) -> None:
        deliveries = peer.deliveries or 1
        if deliveries < self.config.max_deliveries:
            self._park(peer, returned=False)
            return
        control = self.control
        if control is None:
            return
        record = pack_command(
            b"XADD", self._dead, b"MAXLEN", b"~", b"%d" % self.config.maxlen, b"*",
            b"msg", peer.data, b"ch", peer.channel, b"error", error.encode("utf-8", "replace"),
            b"deliveries", b"%d" % deliveries, b"group", self._group, b"id", peer.id,
        )  # fmt: skip

        def stored(reply: Reply) -> None:
            if isinstance(reply, ReplyError):
                log.error(
                    "redis-streams transport: cannot store dead letter %r: %s; it stays pending",
                    peer.id,
                    reply.message,
                )
                return
            log.warning(
                "redis-streams transport: group %r gave up on entry %r after %d deliveries; "
                "dead letter %r in %s: %s",
                self.config.group,
                peer.id,
                deliveries,
                reply,
                self._dead.decode(errors="replace"),
                error,
            )
            self.ack(peer.id)

        control.send(record, stored)

    def _park(self, peer: StreamPeer, *, returned: bool) -> None:
        control = self.control
        if control is None:
            return
        extra: tuple[bytes, ...] = ()
        if returned and peer.deliveries:
            extra = (b"RETRYCOUNT", b"%d" % (peer.deliveries - 1))
        claim = (_RETRY, b"0", peer.id, b"JUSTID", *extra)
        control.send(pack_command(b"XCLAIM", self._key, self._group, *claim))

    # -- keeping and handing back -----------------------------------------------------------

    def refresh(self, older_than: float) -> None:
        """Reset the idle time of entries handled here for ``older_than`` seconds or more, so
        that no other member claims them while this one lives."""
        control = self.control
        now = self._loop.time()
        old = [entry for entry, since in self.inflight.items() if now - since >= older_than]
        if old and control is not None:
            for entry in old:
                self.inflight[entry] = now
            claim = (self._me, b"0", *old, b"JUSTID")
            control.send(pack_command(b"XCLAIM", self._key, self._group, *claim))

    async def hand_back(self, timeout: float) -> None:
        """Park this member's pending entries (read, not finished) for the other members: what
        a member does as it closes."""
        control = self.control
        if control is None or control.closed:
            return
        try:
            mine = await control.call(
                pack_command(b"XPENDING", self._key, self._group, b"-", b"+", b"10000", self._me),
                timeout,
            )
        except distro.TransportError:
            return
        # Each with its count set back by one: read, never handled, so no delivery is spent.
        for item in mine if isinstance(mine, list) else ():
            if isinstance(item, list) and len(item) == 4 and isinstance(item[0], bytes):
                count = item[3] if isinstance(item[3], int) else 1
                claim = (_RETRY, b"0", item[0], b"JUSTID", b"RETRYCOUNT", b"%d" % max(0, count - 1))
                control.send(pack_command(b"XCLAIM", self._key, self._group, *claim))
