"""The ``redis-streams`` transport: at-least-once delivery, consumer groups and dead letters.

* A client (:class:`StreamsConnection`) appends each message to its namespace's stream (XADD,
  batched once per loop iteration like the ``redis`` transport's PUBLISH), and takes replies
  on its own pub/sub reply channel. Before sending a request it checks that some server
  registered a route for it (the routes hash), so a request nobody can answer fails at once.
* A server (:class:`StreamsListener`) is a ``redis`` listener without route subscriptions: it
  keeps that transport's address (the bus and a claimed number), its RECEIVED channel and its
  reply publisher, and reads the stream through a :class:`~._streams_reader.StreamReader`:
  with ``group=``, as one consumer of that group (each message to one member, acknowledged
  after its handlers finished); without, with XREAD from the stream's end (its own copy of
  every message its routes match, as over pub/sub, but kept across link losses).

See the README's redis-streams section for the options and semantics.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import distro_core as distro
from distro_core import transport as kit

from ._channels import message_channel
from ._link import connect
from ._resp import pack_command
from ._streams_config import (
    StreamsConfig,
    consumer_name,
    read_streams_options,
    routes_key,
    xadd_head,
)
from ._streams_link import Appender, Commander
from ._streams_reader import StreamReader
from ._streams_routes import RouteFilter, subscriptions
from ._streams_settle import Settler
from ._transport import RedisConnection, RedisListener

__all__ = ["StreamsConnection", "StreamsListener", "StreamsTransport"]

_REGISTRY_TTL = 1.0
"""Seconds a client trusts a routes hash it read that matched no route of a request."""


class StreamsListener(RedisListener):
    """A server: the ``redis`` listener's address, RECEIVED channel and replies, and a
    :class:`~._streams_reader.StreamReader` instead of route subscriptions."""

    def __init__(self, config: StreamsConfig, receiver: kit.Receiver) -> None:
        super().__init__(config.redis, receiver)
        self.streams = config
        self.reader: StreamReader | None = None

    def _wanted(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        return frozenset(), frozenset()  # messages come from the stream, not from channels

    async def open(self) -> None:
        await super().open()
        config = self.streams = dataclasses.replace(
            self.streams, consumer=consumer_name(self.streams, self.address[1])
        )
        settler = None
        if config.group is not None:
            settler = Settler(config, self._receiver, self.check_reply_to)
        self.reader = StreamReader(config, self._inlet, self._receiver, self._peer, settler)
        self._set_routes()
        try:
            await self.reader.open()
        except BaseException:
            await self.reader.aclose()
            await super().aclose()
            raise

    def _set_routes(self) -> None:
        if self.reader is not None:
            receiver = self._receiver
            self.reader.set_routes(subscriptions(receiver.routes), receiver.has_catch_all)

    def routes_changed(self) -> None:
        self._set_routes()

    def check_reply_to(self, reply_to: str) -> None:
        """Refuse a ``replyTo`` that is not a reply channel of this namespace.

        :raises distro.TransportError: it is not.
        """
        if not reply_to.startswith(self._reply_prefix):
            raise distro.TransportError(
                f"redis-streams transport: replyTo {reply_to!r:.80} is not a reply channel "
                f"({self._reply_prefix}...); reply not sent"
            )

    def resume_reading(self) -> None:
        if self._inlet.resume():
            if self._sub is not None:
                self._sub.resume_reading()
            if self.reader is not None:
                self.reader.resume()

    async def aclose(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            await reader.aclose()
        await super().aclose()


class StreamsConnection(RedisConnection):
    """A client: XADD to the stream, replies on its own channel."""

    _publisher = Appender

    def __init__(self, config: StreamsConfig, receiver: kit.ClientReceiver) -> None:
        super().__init__(config.redis, receiver)
        self.streams = config
        self._routes = RouteFilter()
        self._routes_read = 0.0
        self._query: Commander | None = None
        self._reading: asyncio.Task[None] | None = None

    def _head(self, uri: str, verb: str | None) -> bytes:
        return xadd_head(self.streams.stream, self.streams.maxlen, message_channel("", uri, verb))

    async def request(self, data: bytes, message: distro.Message) -> None:
        if self._closed:
            raise distro.ConnectionError("redis-streams transport: the client is closed")
        headers = message.headers
        channel = message_channel("", headers["uri"], headers.get("verb"))
        if not self._routes.matches(channel):
            loop = asyncio.get_running_loop()
            if loop.time() - self._routes_read > _REGISTRY_TTL:
                await self._read_routes()
            if not self._routes.matches(channel):
                self._receiver.request_failed(
                    message.id,
                    kit.RequestFailure.NO_RECEIVER,
                    f"no server on {self.config.bus} has registered a route for it",
                )
                return
        await super().request(data, message)

    async def store(self, data: bytes, message: distro.Message) -> None:
        """Append ``data`` to the stream (XADD, batched with the other sends of this loop
        iteration) and return once Redis answered it with the entry's id: stored, whether or
        not a member runs (``client.send(msg, confirm=True)`` over ``redis-streams``).

        :raises distro.TransportError: Redis refused the XADD (its error text: OOM under
            ``maxmemory``, WRONGTYPE, NOPERM...).
        :raises distro.ConnectionError: Redis cannot be reached, or the link broke before
            Redis answered (whether it was stored is then unknown).
        """
        if self._closed:
            raise distro.ConnectionError("redis-streams transport: the client is closed")
        pub = self._pub
        if pub is None or pub.closed or self._sub is None or self._sub.closed:
            pub = await self._reconnect()
        self._publish(pub, data, message)
        assert isinstance(pub, Appender)
        stored = pub.stored()
        try:
            if pub.batcher.congested:
                await pub.drain(self.config.connect_timeout)
            await stored
        finally:
            if not stored.done():
                stored.cancel()  # the caller's timeout: Redis's answer is dropped

    async def _read_routes(self) -> None:
        """Read the routes hash again (one read at a time, shared by concurrent requests)."""
        task = self._reading
        if task is None or task.done():
            task = self._reading = asyncio.get_running_loop().create_task(self._fetch_routes())
        await asyncio.shield(task)

    async def _fetch_routes(self) -> None:
        config = self.config
        query = self._query
        if query is None or query.closed:
            conn, transport = await connect(config, "routes query")
            query = self._query = Commander(conn, transport, lambda link, exc: None)
        reply = await query.call(
            pack_command(b"HKEYS", routes_key(config.prefix)), config.connect_timeout
        )
        names = [n for n in reply if type(n) is bytes] if isinstance(reply, list) else []
        self._routes = RouteFilter(names)
        self._routes_read = asyncio.get_running_loop().time()

    def _heard(self, request_id: str, answer: int | str) -> None:
        if isinstance(answer, str):
            self._receiver.request_failed(
                request_id, kit.RequestFailure.REFUSED, f"Redis answered its XADD with {answer}"
            )

    async def aclose(self) -> None:
        task, self._reading = self._reading, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        query, self._query = self._query, None
        if query is not None:
            await query.aclose()
        await super().aclose()


class StreamsTransport(kit.Transport):
    """Redis Streams: at-least-once delivery to consumer groups, with redelivery and dead
    letters. Options: those of ``redis`` (``address`` or ``url``, ``prefix``, ``port``,
    ``connect_timeout``) plus ``group`` (servers; usually given as ``factory.server(group=)``),
    ``consumer``, ``maxlen``, ``max_deliveries``, ``redelivery_delay``, ``claim_after``,
    ``batch`` and ``reply_window``; see the README."""

    name = "redis-streams"
    capabilities = kit.Capabilities(
        ordered=True,
        reliable=True,
        max_message_size=None,
        request_reply=True,
        acknowledgements=True,
        fan_out=True,
        cross_process=True,
        groups=True,
        redelivery=True,
        durable=True,
    )
    api_version = 2

    def __init__(self, config: StreamsConfig, *, options: Mapping[str, Any] | None = None) -> None:
        self.config = config
        if options is not None:
            self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> StreamsTransport:
        """Read the options (see the README and :mod:`~._streams_config`).

        :raises TypeError: an unknown option, or a URL parameter redis-py does not take.
        :raises ValueError: a bad value.
        """
        opts = kit.Options(cls.name, options)
        config = read_streams_options(opts)
        return cls(config, options=opts.finish())

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        listener = StreamsListener(self.config, receiver)
        await listener.open()
        return listener

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        bus = self.config.redis.bus
        connection: RedisConnection
        if target is not None:
            if target[0] != bus:
                raise distro.ConnectionError(
                    f"redis-streams transport: RECEIVED target {target[0]}:{target[1]} is not "
                    f"on this bus ({bus}); a server only acknowledges within its bus"
                )
            # RECEIVED goes to the target server's own pub/sub channel, as over ``redis``.
            connection = RedisConnection(self.config.redis, receiver, target)
        else:
            connection = StreamsConnection(self.config, receiver)
        await connection.open()
        return connection

    def describe(self) -> str:
        group = self.config.group
        return f"redis-streams({self.config.redis.bus}{f', group={group}' if group else ''})"
