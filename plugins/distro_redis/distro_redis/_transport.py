"""The ``redis`` transport: servers subscribe, clients publish, replies and RECEIVED on channels.

* A server (:class:`RedisListener`) holds two links: a subscriber for its routes' channels and
  its own RECEIVED channel, and a publisher for replies. Its address is ``(bus, n)``: ``bus``
  names the Redis and prefix (see :class:`~._config.RedisConfig`), ``n`` is a number it
  claimed on that bus, so ``{"address": bus, "port": n}`` headers send RECEIVED to it. Every
  frame it receives has ``peer.host == bus``: a sender's "host" is the bus it came through, so
  by default RECEIVED may go to any server on the same bus and nowhere else.
  Frames it has read while the core paused reading wait in the listener's
  :class:`~distro_core.transport.FrameInlet`, so they survive a reconnection.
* A client (:class:`RedisConnection`) holds a publisher and a subscriber for its own reply
  channel, whose name is its ``reply_to``. Redis answers each PUBLISH with the number of
  subscribers that got it: a request nobody got, or one Redis refused, is reported to the core
  (``request_failed``) at once instead of waiting for its time-out; a one-way send nobody got
  is reported too (``unheard``, naming its channel): the client counts it in its stats.
* Servers reconnect and resubscribe by themselves after Redis restarts; a client reconnects on
  its next send, which fails with :class:`distro.ConnectionError` while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections.abc import Mapping
from typing import Any

import redis.exceptions
from redis.asyncio.connection import AbstractConnection

import distro_core as distro
from distro_core import transport as kit

from ._channels import (
    REPLY_MARK,
    ack_channel,
    message_channel,
    plan,
    receive_channel,
    reply_channel,
)
from ._config import MAX_BULK, RedisConfig, read_options
from ._link import REDIS_ERRORS, Publisher, Subscriber, connect, log
from ._resp import publish_head

__all__ = ["RedisConnection", "RedisListener", "RedisTransport"]

CLAIM_TRIES = 16
"""How many random address ports a server tries before giving up (each try is one round trip)."""

RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
"""Back-off between a server's reconnection attempts; the last repeats until it succeeds."""

_CACHE_LIMIT = 4096


async def _open_links(
    config: RedisConfig, roles: list[str]
) -> list[tuple[AbstractConnection, asyncio.Transport]]:
    """Connect one link per role at once; on any failure close the others and raise."""
    results = await asyncio.gather(*(connect(config, r) for r in roles), return_exceptions=True)
    failure = next((r for r in results if isinstance(r, BaseException)), None)
    if failure is None:
        return results  # type: ignore[return-value]
    for result in results:
        if not isinstance(result, BaseException):
            result[1].close()
            await result[0].disconnect(nowait=True)
    raise failure


class RedisListener(kit.Listener):
    """A server's subscription to its routes, its RECEIVED channel and its reply publisher."""

    def __init__(self, config: RedisConfig, receiver: kit.Receiver) -> None:
        self.config = config
        self._receiver = receiver
        self._peer = kit.BusPeer(config.bus, self.reply)
        self._sub: Subscriber | None = None
        self._pub: Publisher | None = None
        self._ack = b""
        self._asked: tuple[frozenset[bytes], frozenset[bytes]] = (frozenset(), frozenset())
        self._inlet = kit.FrameInlet(receiver)
        self._serving = False
        self._closing = False
        self._reconnector: asyncio.Task[None] | None = None
        self._reply_prefix = config.prefix + REPLY_MARK
        self._heads: dict[str, bytes] = {}
        self.address = (config.bus, 0)

    # -- opening ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, claim an address port, subscribe, and wait until Redis confirmed it all.

        :raises distro.ConnectionError: Redis cannot be reached.
        :raises distro.AddressInUse: the ``port`` asked for is taken on this bus.
        """
        config = self.config
        (sub_conn, sub_transport), (pub_conn, pub_transport) = await _open_links(
            config, ["subscriber", "publisher"]
        )
        self._sub = self._subscriber(sub_conn, sub_transport)
        try:
            port = await self._claim(self._sub, pub_conn)
            self._pub = Publisher(pub_conn, pub_transport, self._link_lost)
            self._subscribe_routes(self._sub)
            await self._sub.sync(config.connect_timeout)
        except BaseException:
            self._closing = True
            await self._sub.aclose()
            pub_transport.close()
            await pub_conn.disconnect(nowait=True)
            raise
        self.address = (config.bus, port)
        self._serving = True
        if self._broken():  # lost while opening: nobody was there to notice
            self._link_lost(None, None)

    def _subscriber(self, conn: AbstractConnection, transport: asyncio.Transport) -> Subscriber:
        sub = Subscriber(conn, transport, self._link_lost, inlet=self._inlet, peer=self._peer)
        if self._inlet.paused:
            sub.pause_reading()
        return sub

    async def _claim(self, sub: Subscriber, pub_conn: AbstractConnection) -> int:
        """Subscribe to a free RECEIVED channel; its number is this server's address port.

        A port is ours when, with our subscription confirmed, Redis counts one subscriber to
        its channel: of two servers racing for one number, at least the later one sees two.
        """
        config = self.config
        wanted = config.port
        tries = [wanted] if wanted else [random.randrange(1, 65536) for _ in range(CLAIM_TRIES)]
        for port in tries:
            channel = ack_channel(config.prefix, port)
            sub.change(add_channels=[channel])
            await sub.sync(config.connect_timeout)
            try:
                await pub_conn.send_command("PUBSUB", "NUMSUB", channel)
                reply = await pub_conn.read_response()
            except redis.exceptions.ResponseError as exc:
                # PUBSUB forbidden (an ACL): keep the number unchecked rather than not serve.
                log.warning("redis transport: cannot check address port %d is free: %s", port, exc)
                self._ack = channel
                return port
            except (redis.exceptions.RedisError, OSError) as exc:
                context = f"redis transport: claiming a port on {config.bus}"
                raise kit.map_error(exc, context, table=REDIS_ERRORS) from exc
            if isinstance(reply, list) and len(reply) == 2 and int(reply[1]) <= 1:
                self._ack = channel
                return port
            sub.change(drop_channels=[channel])
        if wanted:
            raise distro.AddressInUse(
                f"redis transport: port {wanted} is already taken on {config.bus}"
            )
        raise distro.AddressInUse(
            f"redis transport: no free address port on {config.bus} after {CLAIM_TRIES} tries"
        )

    # -- subscriptions ----------------------------------------------------------------------

    def _wanted(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        receiver = self._receiver
        return plan(self.config.prefix, receiver.routes, receiver.has_catch_all)

    def _subscribe_routes(self, sub: Subscriber) -> None:
        channels, patterns = self._asked = self._wanted()
        sub.change(add_channels=channels, add_patterns=patterns)

    def routes_changed(self) -> None:
        sub = self._sub
        if sub is None or sub.closed:
            return  # the reconnection subscribes to whatever the routes are then
        channels, patterns = wanted = self._wanted()
        old_channels, old_patterns = self._asked
        if wanted == self._asked:
            return
        sub.change(
            add_channels=channels - old_channels,
            add_patterns=patterns - old_patterns,
            drop_channels=old_channels - channels,
            drop_patterns=old_patterns - patterns,
        )
        self._asked = wanted

    # -- replies ----------------------------------------------------------------------------

    def reply(self, data: bytes, reply_to: str) -> None:
        """Publish a reply on the requesting client's reply channel (see
        :meth:`distro_core.transport.Peer.send`).

        :raises distro.TransportError: ``reply_to`` is not a reply channel of this namespace
            (a server publishes only there, whatever a request says).
        :raises distro.ConnectionError: Redis is unreachable just now.
        """
        head = self._heads.get(reply_to)
        if head is None:
            if not reply_to.startswith(self._reply_prefix):
                raise distro.TransportError(
                    f"redis transport: replyTo {reply_to!r:.80} is not a reply channel "
                    f"({self._reply_prefix}...); reply not sent"
                )
            try:
                head = publish_head(reply_to.encode())
            except UnicodeEncodeError as exc:
                raise distro.TransportError(f"redis transport: bad replyTo: {exc}") from exc
            if len(self._heads) >= _CACHE_LIMIT:
                self._heads.clear()
            self._heads[reply_to] = head
        pub = self._pub
        if pub is None or pub.closed:
            raise distro.ConnectionError(
                f"redis transport: Redis at {self.config.location} is unreachable; reply dropped"
            )
        pub.publish(head, data)

    # -- flow control and reconnection ------------------------------------------------------

    def pause_reading(self) -> None:
        self._inlet.pause()
        if self._sub is not None:
            self._sub.pause_reading()

    def resume_reading(self) -> None:
        # The frames held meanwhile go first; reading resumes once the core took them all.
        if self._inlet.resume() and self._sub is not None:
            self._sub.resume_reading()

    def _link_lost(self, link: Any, exc: BaseException | None) -> None:
        if self._closing or not self._serving:
            return
        log.warning(
            "redis transport: server on %s lost its link to Redis (%s); reconnecting",
            self.config.bus,
            exc,
        )
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect())

    def _broken(self) -> bool:
        return (self._sub is None or self._sub.closed) or (self._pub is None or self._pub.closed)

    async def _reconnect(self) -> None:
        config = self.config
        attempt = 0
        while not self._closing and self._broken():
            try:
                roles = [
                    role
                    for role, link in (("publisher", self._pub), ("subscriber", self._sub))
                    if link is None or link.closed
                ]
                links = dict(zip(roles, await _open_links(config, roles), strict=True))
                # The publisher first: a message the new subscriber delivers may be a request,
                # and its reply needs a live publisher.
                if "publisher" in links:
                    old_pub, self._pub = self._pub, Publisher(*links["publisher"], self._link_lost)
                    if old_pub is not None:
                        await old_pub.aclose()
                if "subscriber" in links:
                    old, self._sub = self._sub, self._subscriber(*links["subscriber"])
                    if old is not None:
                        await old.aclose()
                    self._sub.change(add_channels=[self._ack])
                    self._subscribe_routes(self._sub)
                    await self._sub.sync(config.connect_timeout)
            except distro.TransportError as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.debug("redis transport: reconnect failed (%s); again in %gs", exc, delay)
                await asyncio.sleep(delay)
        if not self._closing:
            log.warning("redis transport: server on %s is back on Redis", config.bus)

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closing and self._sub is None:
            return
        self._closing = True
        reconnector, self._reconnector = self._reconnector, None
        if reconnector is not None and not reconnector.done():
            reconnector.cancel()
            await asyncio.gather(reconnector, return_exceptions=True)
        pub, self._pub = self._pub, None
        sub, self._sub = self._sub, None
        if pub is not None:
            await pub.settle(min(self.config.connect_timeout, 1.0))
            await pub.aclose()
        if sub is not None:
            await sub.aclose()
        discarded = self._inlet.close()
        for _ in range(discarded):
            self._receiver.frame_dropped(
                "closing",
                f"redis transport: a frame held while paused, server on {self.config.bus}",
            )


class RedisConnection(kit.Connection):
    """A client's links: a publisher, and a subscriber to its own reply channel.

    With ``target`` (a RECEIVED link the core opens to another server), every frame goes to
    that server's RECEIVED channel and no reply channel is needed.
    """

    def __init__(
        self,
        config: RedisConfig,
        receiver: kit.ClientReceiver,
        target: tuple[str, int] | None = None,
        *,
        publish_receive: bool = False,
    ) -> None:
        self.config = config
        # The JavaScript original's RECEIVE channel, for messages (not RECEIVED): see _also.
        self._receive = (
            publish_head(receive_channel(config.prefix))
            if publish_receive and target is None
            else None
        )
        self._receive_unheard = 0
        self._receiver = receiver
        self._pub: Publisher | None = None
        self._sub: Subscriber | None = None
        self._fixed = (
            publish_head(ack_channel(config.prefix, target[1])) if target is not None else None
        )
        self._replies = target is None
        self.reply_to = reply_channel(config.prefix, uuid.uuid4().hex) if self._replies else ""
        self._heads: dict[tuple[str, str | None], bytes] = {}
        self._reconnecting: asyncio.Task[Publisher] | None = None
        self._closed = False
        self._unheard_before = 0  # of publishers this connection replaced

    async def open(self) -> None:
        """Connect (and subscribe to the reply channel, confirmed before this returns).

        :raises distro.ConnectionError: Redis cannot be reached.
        """
        await self._connect()

    async def _connect(self) -> Publisher:
        config = self.config
        roles = []
        if self._pub is None or self._pub.closed:
            roles.append("publisher")
        if self._replies and (self._sub is None or self._sub.closed):
            roles.append("subscriber")
        links = dict(zip(roles, await _open_links(config, roles), strict=True))
        if "subscriber" in links:
            conn, transport = links["subscriber"]
            sub = Subscriber(
                conn, transport, self._link_lost, deliver=self._receiver.frame_received
            )
            old_sub, self._sub = self._sub, sub
            if old_sub is not None:
                await old_sub.aclose()
            sub.change(add_channels=[self.reply_to.encode()])
            try:
                await sub.sync(config.connect_timeout)
            except BaseException:
                if "publisher" in links:
                    links["publisher"][1].close()
                    await links["publisher"][0].disconnect(nowait=True)
                raise
        if "publisher" in links:
            conn, transport = links["publisher"]
            old_pub, self._pub = self._pub, self._publisher(conn, transport, self._link_lost)
            self._pub.on_unheard = self._unheard
            if old_pub is not None:
                self._unheard_before += old_pub.unheard
                await old_pub.aclose()
        assert self._pub is not None
        return self._pub

    async def _reconnect(self) -> Publisher:
        if self._closed:
            raise distro.ConnectionError("redis transport: the client is closed")
        task = self._reconnecting
        if task is None or task.done():
            task = self._reconnecting = asyncio.get_running_loop().create_task(self._connect())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and self._closed:  # aclose() stopped it, not our caller
                raise distro.ConnectionError("redis transport: the client was closed") from None
            raise
        except distro.TransportError as exc:
            raise distro.ConnectionError(
                f"redis transport: Redis at {self.config.location} is unreachable: {exc}"
            ) from exc

    def _link_lost(self, link: Any, exc: BaseException | None) -> None:
        if self._closed:
            return
        if link is self._sub:
            error = distro.ConnectionError(
                f"redis transport: lost the reply channel's link to {self.config.location}"
            )
            error.__cause__ = exc
            self._receiver.connection_lost(error)

    async def send(self, data: bytes, message: distro.Message) -> None:
        pub = self._pub
        if pub is None or pub.closed or (self._replies and (self._sub is None or self._sub.closed)):
            pub = await self._reconnect()
        if self._receive is None:
            self._publish(pub, data, message)
        else:
            self._publish(pub, data, message)
            tally = _Heard(self, pub, message)
            pub.watch(tally.answer)
            pub.publish(self._receive, data)
            pub.watch(tally.answer)
        if pub.batcher.congested:
            await pub.drain(self.config.connect_timeout)

    async def request(self, data: bytes, message: distro.Message) -> None:
        pub = self._pub
        if pub is None or pub.closed or (self._replies and (self._sub is None or self._sub.closed)):
            pub = await self._reconnect()
        self._publish(pub, data, message)
        if self._replies:
            # Redis answers a PUBLISH with how many subscribers got it: with none, no reply
            # can come, so the request fails now instead of at its time-out.
            pub.watch(functools.partial(self._heard, message.id))
        if self._receive is not None:
            # JavaScript receive() handlers see requests too, but cannot answer them: whether
            # a request can be answered depends on its own channel only.
            pub.publish(self._receive, data)
            pub.watch(_ignore)
        if pub.batcher.congested:
            await pub.drain(self.config.connect_timeout)

    def _publish(self, pub: Publisher, data: bytes, message: distro.Message) -> None:
        if pub.error is not None:
            error, pub.error = pub.error, None
            raise distro.TransportError(
                f"redis transport: Redis refused an earlier PUBLISH on this link: {error}"
            )
        head = self._fixed
        if head is None:
            headers = message.headers
            key = (headers["uri"], headers.get("verb"))
            head = self._heads.get(key)
            if head is None:
                head = self._head(*key)
                if len(self._heads) >= _CACHE_LIMIT:
                    self._heads.clear()
                self._heads[key] = head
        if len(data) > MAX_BULK:
            raise distro.MessageTooLarge(len(data), MAX_BULK, "redis")
        pub.publish(head, data)

    @property
    def unheard(self) -> int:
        """One-way sends (and RECEIVED) that Redis said no subscriber received: lost, since
        pub/sub keeps nothing. Each is also reported to the client (``receiver.unheard``),
        which counts it in ``client.stats.unheard`` and logs it, rate-limited."""
        published = self._pub.unheard if self._pub is not None else 0
        return self._unheard_before + published + self._receive_unheard

    def _unheard(self, channel: bytes, count: int) -> None:
        detail = (
            f"no subscriber on {self.config.bus} received it on channel "
            f"{channel.decode('utf-8', 'replace')} (lost: pub/sub keeps nothing)"
        )
        report = self._receiver.unheard
        for _ in range(count):
            report(detail)

    # Where a frame goes: redis-streams (a subclass) appends to a stream instead.
    _publisher: type[Publisher] = Publisher

    def _head(self, uri: str, verb: str | None) -> bytes:
        """The encoded start of the command that sends a message with this uri and verb."""
        return publish_head(message_channel(self.config.prefix, uri, verb))

    def _heard(self, request_id: str, answer: int | str) -> None:
        """Redis's answer to a request's PUBLISH: how many subscribers got it, or an error."""
        if answer == 0:
            self._receiver.request_failed(
                request_id,
                kit.RequestFailure.NO_RECEIVER,
                f"no server on {self.config.bus} subscribes to it",
            )
        elif isinstance(answer, str):
            self._receiver.request_failed(
                request_id, kit.RequestFailure.REFUSED, f"Redis answered its PUBLISH with {answer}"
            )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._reconnecting = self._reconnecting, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pub, self._pub = self._pub, None
        sub, self._sub = self._sub, None
        if pub is not None:
            if not await pub.settle(min(self.config.connect_timeout, 2.0)):
                log.warning(
                    "redis transport: closing with %d PUBLISH(es) Redis has not confirmed",
                    pub.outstanding,
                )
            await pub.aclose()
        if sub is not None:
            await sub.aclose()


def _ignore(answer: int | str) -> None:
    """Redis's answer to a PUBLISH on ``RECEIVE`` beside a request's: nothing to do."""


class _Heard:
    """Redis's two answers for a one-way message published on its channel and on ``RECEIVE``:
    it was heard if either reached a subscriber (a JavaScript ``receive()`` handler counts)."""

    __slots__ = ("_answers", "_channel", "_connection", "_pub")

    def __init__(
        self, connection: RedisConnection, pub: Publisher, message: distro.Message
    ) -> None:
        self._connection = connection
        self._pub = pub
        headers = message.headers
        self._channel = message_channel(
            connection.config.prefix, headers["uri"], headers.get("verb")
        )
        self._answers: list[int | str] = []

    def answer(self, answer: int | str) -> None:
        """Take one of the two answers; report the message unheard when both reached none."""
        if isinstance(answer, str):  # refused: the next send reports it, as for any one-way
            self._pub.error = answer
        self._answers.append(answer)
        if len(self._answers) == 2 and self._answers == [0, 0]:
            self._connection._receive_unheard += 1
            self._connection._unheard(self._channel, 1)


class RedisTransport(kit.Transport):
    """Redis pub/sub. Options: ``address`` or ``url`` (the Redis, and ``#prefix``),
    ``prefix``, ``port`` (a server's number on the bus), ``connect_timeout``, and for clients
    ``publish_receive`` (also publish every message on ``<prefix>RECEIVE``, for the JavaScript
    original's ``receive()`` handlers); see the README."""

    name = "redis"
    capabilities = kit.Capabilities(
        ordered=True,
        reliable=True,
        max_message_size=None,
        request_reply=True,
        acknowledgements=True,
        fan_out=True,
        cross_process=True,
    )
    api_version = 2

    def __init__(
        self,
        config: RedisConfig,
        *,
        options: Mapping[str, Any] | None = None,
        publish_receive: bool = False,
    ) -> None:
        self.config = config
        self.publish_receive = publish_receive
        """A client also publishes every message on ``<prefix>RECEIVE`` (servers ignore it)."""
        if options is not None:
            self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RedisTransport:
        """Read the options (see the README and :mod:`~._config`).

        :raises TypeError: an unknown option, or a URL parameter redis-py does not take.
        :raises ValueError: a bad value.
        """
        opts = kit.Options(cls.name, options)
        config = read_options(opts)
        publish_receive = opts.flag("publish_receive", False)
        return cls(config, options=opts.finish(), publish_receive=publish_receive)

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        listener = RedisListener(self.config, receiver)
        await listener.open()
        return listener

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        if target is not None and target[0] != self.config.bus:
            raise distro.ConnectionError(
                f"redis transport: RECEIVED target {target[0]}:{target[1]} is not on this "
                f"bus ({self.config.bus}); a redis server only acknowledges within its bus"
            )
        connection = RedisConnection(
            self.config, receiver, target, publish_receive=self.publish_receive
        )
        await connection.open()
        return connection

    def describe(self) -> str:
        return f"redis({self.config.bus})"
