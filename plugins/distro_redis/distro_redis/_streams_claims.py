"""A group member's periodic work: redelivering parked entries, keeping its own, claiming what
stopped members left, and forgetting consumers that are gone.

Every ``min(redelivery_delay / 2, claim_after / 3)`` seconds (0.01 s at least, 5 s at most),
while the core takes frames:

* entries parked under the retry consumer whose ``redelivery_delay`` has passed are claimed
  (XPENDING for that consumer, then XCLAIM with the delay as minimum idle time, so two members
  never both take one) and handed to the core with their delivery count;
* every ``claim_after / 3``, the entries this member is still handling are refreshed (XCLAIM
  JUSTID to itself resets their idle time): live members keep theirs;
* every ``claim_after / 2``, XAUTOCLAIM takes entries idle for ``claim_after`` (their member
  died or stopped), and consumers with nothing pending that have not read for
  :data:`FORGET_AFTER` claim periods are deleted (XGROUP DELCONSUMER).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import distro_core as distro

from ._link import log
from ._resp import ReplyError, pack_command
from ._streams_config import RETRY_CONSUMER
from ._streams_link import Commander

if TYPE_CHECKING:
    from ._streams_reader import StreamReader

__all__ = ["FORGET_AFTER", "Claims"]

FORGET_AFTER = 10
"""A consumer with nothing pending that has not read for this many ``claim_after`` periods is
deleted from the group (one that is in fact alive is made again by its next read)."""

_RETRY = RETRY_CONSUMER.encode()


class Claims:
    """The periodic work of one group member's :class:`~._streams_reader.StreamReader`.

    :ivar cursor: where the next XAUTOCLAIM goes on from.
    """

    def __init__(self, reader: StreamReader) -> None:
        self.reader = reader
        self.cursor = b"0-0"

    async def run(self) -> None:
        """Until the reader closes: redeliver, refresh and claim (see the module docstring)."""
        config = self.reader.config
        period = max(0.01, min(config.redelivery_delay / 2, config.claim_after / 3, 5.0))
        claim_every = config.claim_after / 2
        refresh_every = config.claim_after / 3
        last_claim = last_refresh = time.monotonic()
        while not self.reader._closing:
            await asyncio.sleep(period)
            control = self.reader._control
            if control is None or control.closed:
                continue
            now = time.monotonic()
            if now - last_refresh >= refresh_every:
                # Even while the core is busy (paused): that is when handlers are slow.
                last_refresh = now
                if self.reader._settler is not None:
                    self.reader._settler.refresh(refresh_every)
            if self.reader._inlet.paused:
                continue  # take on nothing more while the core has no room
            try:
                await self._retry(control)
                if now - last_claim >= claim_every:
                    last_claim = now
                    await self._claim_abandoned(control)
                    await self._forget_consumers(control)
            except distro.TransportError as exc:
                log.debug("redis-streams transport: redelivery check failed: %s", exc)

    async def _retry(self, control: Commander) -> None:
        """Claim parked entries whose delay has passed and hand them on."""
        idle = b"%d" % int(self.reader.config.redelivery_delay * 1000)
        timeout = self.reader._redis.connect_timeout
        due = await control.call(
            pack_command(
                b"XPENDING", self.reader._key, self.reader._group, b"IDLE", idle, b"-", b"+",
                b"%d" % self.reader.config.batch, _RETRY,
            ),
            timeout,
        )  # fmt: skip
        if isinstance(due, ReplyError) or not isinstance(due, list) or not due:
            return
        counts: dict[bytes, int] = {}
        for item in due:
            if isinstance(item, list) and len(item) == 4:
                entry_id, count = item[0], item[3]
                if isinstance(entry_id, bytes) and isinstance(count, int):
                    counts[entry_id] = count + 1
        if not counts:
            return
        claimed = await control.call(
            pack_command(
                b"XCLAIM", self.reader._key, self.reader._group, self.reader._me, idle, *counts
            ),
            timeout,
        )
        if isinstance(claimed, list):
            self.reader._take([e for e in claimed if isinstance(e, list)], None, counts)

    async def _claim_abandoned(self, control: Commander) -> None:
        """XAUTOCLAIM entries idle for ``claim_after``: their member stopped (or died)."""
        idle = b"%d" % int(self.reader.config.claim_after * 1000)
        reply = await control.call(
            pack_command(
                b"XAUTOCLAIM", self.reader._key, self.reader._group, self.reader._me, idle,
                self.cursor, b"COUNT", b"%d" % self.reader.config.batch,
            ),
            self.reader._redis.connect_timeout,
        )  # fmt: skip
        if not isinstance(reply, list) or len(reply) < 2:
            if isinstance(reply, ReplyError) and reply.message.startswith("NOGROUP"):
                await self.reader._ensure_group(control, self.reader._redis.connect_timeout)
            return
        cursor, entries = reply[0], reply[1]
        self.cursor = cursor if isinstance(cursor, bytes) else b"0-0"
        if len(reply) > 2 and isinstance(reply[2], list) and reply[2]:
            self.reader.trimmed += len(reply[2])
            for _ in reply[2]:
                self.reader._receiver.frame_dropped(
                    "trimmed", "redis-streams transport: a pending entry was trimmed away"
                )
        if isinstance(entries, list) and entries:
            log.warning(
                "redis-streams transport: member %r claimed %d entries left by stopped members",
                self.reader.config.consumer,
                len(entries),
            )
            self.reader._take([e for e in entries if isinstance(e, list)], None)

    async def _forget_consumers(self, control: Commander) -> None:
        """Delete consumers with nothing pending that have not read for ``FORGET_AFTER``
        claim periods: members that stopped (their names would pile up in the group)."""
        reply = await control.call(
            pack_command(b"XINFO", b"CONSUMERS", self.reader._key, self.reader._group),
            self.reader._redis.connect_timeout,
        )
        limit = int(self.reader.config.claim_after * FORGET_AFTER * 1000)
        for info in reply if isinstance(reply, list) else ():
            if not isinstance(info, list):
                continue
            fields = dict(zip(info[::2], info[1::2], strict=False))
            name, idle, held = fields.get(b"name"), fields.get(b"idle"), fields.get(b"pending")
            if (
                isinstance(name, bytes)
                and name not in (self.reader._me, _RETRY)
                and held == 0
                and isinstance(idle, int)
                and idle > limit
            ):
                delete = (b"DELCONSUMER", self.reader._key, self.reader._group, name)
                control.send(pack_command(b"XGROUP", *delete))
