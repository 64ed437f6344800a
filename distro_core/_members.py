"""A client given several servers (``servers=[(host, port), ...]``): one connection per
server, messages spread over them in turn, a server found down skipped for a while.

The client (``_client``) decides what to send where; this module keeps the members, their
connections and their health.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from ._exceptions import ConnectionError
from ._logging import Logger, RateLimitedLog
from ._transport import Connection, RequestFailure, Transport

if TYPE_CHECKING:
    from ._client import Client
    from ._message import Message

__all__ = ["FIRST_BACKOFF", "LONGEST_BACKOFF", "Member", "Members", "check_servers"]

FIRST_BACKOFF = 0.5
"""Seconds a member found down is skipped the first time (doubled each time it is found down
again, up to :data:`LONGEST_BACKOFF`; reset when it takes a message)."""
LONGEST_BACKOFF = 5.0
"""The longest a member found down is skipped before it is tried again."""


def check_servers(servers: object) -> list[tuple[str, int]]:
    """Validate the ``servers=`` client option: a non-empty list of ``(host, port)`` pairs.

    :raises TypeError, ValueError: saying which entry is wrong.
    """
    if isinstance(servers, (str, bytes)) or not isinstance(servers, Sequence):
        raise TypeError(f"servers must be a list of (host, port) pairs, got {servers!r}")
    if not servers:
        raise ValueError("servers must name at least one (host, port)")
    checked: list[tuple[str, int]] = []
    for index, entry in enumerate(servers):
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise TypeError(f"servers[{index}] must be a (host, port) pair, got {entry!r}")
        host, port = entry
        if not isinstance(host, str) or not host:
            raise TypeError(f"servers[{index}]: host must be a non-empty string, got {host!r}")
        if type(port) is not int or not 0 < port < 65536:
            raise ValueError(f"servers[{index}]: port must be an integer 1..65535, got {port!r}")
        if (host, port) in checked:
            raise ValueError(f"servers[{index}]: ({host!r}, {port}) is named twice")
        checked.append((host, port))
    return checked


class Member:
    """One server of the list: its transport, its connection once made, and its health."""

    __slots__ = (
        "backoff",
        "client",
        "conn",
        "connecting",
        "down_until",
        "error",
        "inflight",
        "transport",
        "where",
    )

    def __init__(self, transport: Transport, where: str, client: Client) -> None:
        self.transport = transport
        self.where = where
        self.client = client
        self.conn: Connection | None = None
        self.connecting: asyncio.Task[None] | None = None
        """Connecting in the background (never in a sender's way while another is up)."""
        self.error: ConnectionError | None = None
        self.down_until = 0.0
        self.backoff = FIRST_BACKOFF
        self.inflight: set[str] = set()
        """Ids of the requests sent over this member that still wait for their replies."""

    # -- the ClientReceiver protocol, for this member's connection ------------------------

    def frame_received(self, data: bytes) -> None:
        """A reply: the client matches it by id, whichever member it came from."""
        self.client.frame_received(data)

    def request_failed(self, request_id: str, failure: RequestFailure, detail: str) -> None:
        """Passed on to the client."""
        self.client.request_failed(request_id, failure, detail)

    def unheard(self, detail: str) -> None:
        """Passed on to the client."""
        self.client.unheard(detail)

    def connection_lost(self, exc: BaseException | None) -> None:
        """This member's link broke: only the requests sent over it fail."""
        self.client.member_lost(self, exc)


class Members:
    """The servers of one client, tried in turn.

    :param transports: one transport per server, made from the client's options.
    :param wheres: how each server is named in errors and logs.
    :param client: the client the connections report to.
    :param logger: where a member found down is logged (rate-limited).
    """

    __slots__ = ("_closed", "_log", "_loop", "_next", "members")

    def __init__(
        self,
        transports: Sequence[Transport],
        wheres: Sequence[str],
        client: Client,
        logger: Logger,
    ) -> None:
        self.members = [Member(t, w, client) for t, w in zip(transports, wheres, strict=True)]
        self._next = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log = RateLimitedLog(logger)

    def __len__(self) -> int:
        return len(self.members)

    def describe(self) -> str:
        """The servers, for error messages."""
        return ", ".join(m.where for m in self.members)

    async def open(self) -> None:
        """Connect to every server at once; return as soon as one is connected (the others go on
        connecting in the background; those that cannot be reached are marked down and tried
        again later).

        :raises ConnectionError: none of them could be reached (each one's error is listed).
        """
        loop = self._loop = asyncio.get_running_loop()
        for member in self.members:
            member.connecting = loop.create_task(self._connect(member))
        waiting = {m.connecting for m in self.members if m.connecting is not None}
        while waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            failed = next((t for t in done if not t.cancelled() and t.exception()), None)
            if failed is not None:
                await self.aclose()
                raise failed.exception()  # type: ignore[misc]  # not None: just checked
            if any(m.conn is not None for m in self.members):
                return
        errors = "; ".join(f"{m.where}: {m.error}" for m in self.members)
        await self.aclose()
        raise ConnectionError(f"no server could be reached: {errors}")

    async def _connect(self, member: Member) -> None:
        """Connect ``member``: up when it works, down (for a while) when it cannot be reached."""
        try:
            conn = await member.transport.connect(member)
        except ConnectionError as exc:
            member.error = exc
            self.down(member, exc)
        else:
            if self._closed:
                await conn.aclose()
                return
            member.conn = conn
            self.up(member)
        finally:
            member.connecting = None

    def candidates(self) -> Iterator[Member]:
        """The members to try for the next message: the next one in turn first, those up before
        those down or not yet connected (still tried, last, when every one up has failed).
        Reaching a member: its connection is made again in the background once its back-off
        has passed."""
        members = self.members
        count = len(members)
        start = self._next
        self._next = (start + 1) % count
        loop = self._loop
        assert loop is not None
        now = loop.time()
        later: list[Member] = []
        for offset in range(count):
            member = members[(start + offset) % count]
            if member.conn is not None and member.down_until <= now:
                yield member
                continue
            if member.conn is None and member.connecting is None and member.down_until <= now:
                member.connecting = loop.create_task(self._connect(member))
            later.append(member)
        later.sort(key=lambda m: m.down_until)
        yield from later

    async def connection(self, member: Member) -> Connection:
        """The member's connection; waits for it to be made when it is not yet (the last
        resort: every member that is up has failed).

        :raises ConnectionError: it cannot be reached.
        """
        conn = member.conn
        if conn is None:
            if member.connecting is None:
                member.connecting = asyncio.ensure_future(self._connect(member))
            await asyncio.shield(member.connecting)
            conn = member.conn
            if conn is None:
                raise member.error or ConnectionError(f"{member.where} cannot be reached")
        return conn

    def down(self, member: Member, error: BaseException | None) -> None:
        """``member`` failed to take a message or its link broke: skip it for a while."""
        assert self._loop is not None
        member.down_until = self._loop.time() + member.backoff
        member.client.stats.members_down += 1
        self._log.log(
            member.where,
            logging.WARNING,
            "distro client: server %s is down, skipped for %.1fs: %s",
            member.where,
            member.backoff,
            error,
        )
        member.backoff = min(member.backoff * 2, LONGEST_BACKOFF)

    async def send(self, data: bytes, msg: Message) -> None:
        """Send one way to the next member that takes it.

        :raises ConnectionError: none of them took it.
        """
        error: ConnectionError | None = None
        for member in self.candidates():
            try:
                conn = await self.connection(member)
                await conn.send(data, msg)
            except ConnectionError as exc:
                self.down(member, exc)
                error = exc
                continue
            self.up(member)
            return
        raise ConnectionError(f"no server took message {msg.id}: {error}") from error

    async def request(
        self, msg: Message, encode: Callable[[str], bytes]
    ) -> tuple[Connection, Member, bytes]:
        """Send a request to the next member that takes it.

        :param encode: makes the frame for a connection's ``reply_to``.
        :returns: the connection it went over, its member and the frame (to send again).
        :raises ConnectionError: none of them took it.
        """
        error: ConnectionError | None = None
        for member in self.candidates():
            try:
                conn = await self.connection(member)
                data = encode(conn.reply_to)
                member.inflight.add(msg.id)
                await conn.request(data, msg)
            except ConnectionError as exc:
                member.inflight.discard(msg.id)
                self.down(member, exc)
                error = exc
                continue
            self.up(member)
            return conn, member, data
        raise ConnectionError(f"no server took request {msg.id}: {error}") from error

    @staticmethod
    def up(member: Member) -> None:
        """``member`` took a message: it is healthy again."""
        if member.down_until:
            member.down_until = 0.0
            member.backoff = FIRST_BACKOFF

    async def aclose(self) -> None:
        """Stop connecting and close every connection."""
        self._closed = True
        tasks = [m.connecting for m in self.members if m.connecting is not None]
        for task in tasks:
            task.cancel()
        conns = [m.conn for m in self.members if m.conn is not None]
        for member in self.members:
            member.conn = None
        await asyncio.gather(*tasks, *(c.aclose() for c in conns), return_exceptions=True)
