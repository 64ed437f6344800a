"""The ``jetstream`` transport: durable, at-least-once delivery through NATS JetStream.

* A client (:class:`JetStreamConnection`) publishes each message on its subject (the same
  mapping as ``nats``, :mod:`.subjects`), where the prefix's stream stores it. A one-way send
  carries a ``Nats-Msg-Id`` (the message's id) and a reply subject for JetStream's publish
  acknowledgement (PubAck) in the client's inbox; at most ``max_unacked`` sends wait for
  theirs at a time (a send past that waits, at most ``connect_timeout``). A refusal is raised
  by the client's next send (and counted ``unheard``); the sends not acknowledged when the
  connection broke are published again once it is back (JetStream stores a message id once
  within ``duplicate_window``). A confirmed send (:meth:`JetStreamConnection.store`) is such a
  send that waits for its own PubAck: it returns once JetStream stored it, or raises its
  refusal. Requests go the same way, without the id (a repeat of a request must be
  delivered again to be answered again), their refusal failing the request at once.
* A server (:class:`JetStreamListener`) is a ``nats`` listener without route subscriptions:
  it keeps that transport's address (the bus and a claimed number), its RECEIVED subject and
  its replies to inboxes, and pulls its messages from a JetStream consumer through a
  :class:`~._jetstream_pull.Puller`: with ``group=``, the group's durable consumer (each
  message to one member, settled when handled); without, an ephemeral consumer of its own.

See the README's JetStream section for the options and semantics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import attrs
import nats.errors
import nats.js.errors

import distro_core as distro
from distro_core import transport as kit

from ._jetstream_config import (
    JetStreamConfig,
    read_jetstream_options,
    routes_stream_name,
    routes_subjects,
)
from ._jetstream_pull import Puller
from ._jetstream_setup import ensure_streams
from ._link import Link, log
from ._transport import NatsConnection, NatsListener, _head
from .subjects import Owners, escape, message_subject, unescape

__all__ = ["JetStreamConnection", "JetStreamListener", "JetStreamTransport"]

_CRLF = b"\r\n"
_CACHE_LIMIT = 4096
_ERROR = b'"error"'
HEADER_ROOM = 256
"""Bytes of a NATS ``max_payload`` kept for the ``Nats-Msg-Id`` header of a send: the default
``max_message_size`` is 1 MiB (NATS's default ``max_payload``) less this."""
_ROUTES_TTL = 1.0
"""Seconds a client trusts the routes it read when they matched none of a request's."""


class JetStreamListener(NatsListener):
    """A server: the ``nats`` listener's address, RECEIVED subject and replies, and a
    :class:`~._jetstream_pull.Puller` instead of route subscriptions."""

    def __init__(self, config: JetStreamConfig, receiver: kit.Receiver) -> None:
        super().__init__(config.nats, receiver)
        self.jetstream = config
        self.puller: Puller | None = None
        self._watch: asyncio.Task[None] | None = None

    def _wanted(self) -> frozenset[str]:
        return frozenset()  # messages come from the consumer, not from subscriptions

    async def open(self) -> None:
        """Connect and claim an address (as ``nats``), then make the streams and the consumer
        when missing and start pulling.

        :raises distro.ConnectionError: NATS or JetStream cannot be reached.
        :raises distro.TransportError: JetStream refused to make the stream or consumer.
        """
        await super().open()
        link = self._link
        assert link is not None
        puller = Puller(self.jetstream, link, self._inlet, self._receiver, self._peer, self.reply)
        self._set_routes(puller)
        try:
            await puller.open()
        except BaseException:
            await puller.aclose()
            await super().aclose()
            raise
        self.puller = puller
        link.on_lost = self._lost_link

    def _lost_link(self) -> None:
        self._lost()
        link = self._link
        if self._watch is None and link is not None:
            self._watch = asyncio.get_running_loop().create_task(self._back(link))

    async def _back(self, link: Link) -> None:
        try:
            await link.back.wait()
        finally:
            self._watch = None
        if self.puller is not None and not self._closing:
            self.puller.reconnected()

    def _set_routes(self, puller: Puller) -> None:
        receiver = self._receiver
        puller.set_routes(receiver.routes, receiver.has_catch_all)

    def routes_changed(self) -> None:
        if self.puller is not None:
            self._set_routes(self.puller)

    def pause_reading(self) -> None:
        self._inlet.pause()

    def resume_reading(self) -> None:
        if self._inlet.resume() and self.puller is not None:
            self.puller.pull()

    async def aclose(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        puller, self.puller = self.puller, None
        if puller is not None:
            await puller.aclose()
        await super().aclose()


class JetStreamConnection(NatsConnection):
    """A client: JetStream publishes (PubAcks to its inbox), replies to its inbox."""

    kind = "jetstream"

    def __init__(self, config: JetStreamConfig, receiver: kit.ClientReceiver) -> None:
        super().__init__(config.nats, receiver)
        self.jetstream = config
        self._acks = f"{self._inbox}.a.".encode()
        self._ack_heads: dict[tuple[str, str | None], bytes] = {}
        self._unacked: dict[int, bytes] = {}
        self._sent = 0
        self._room = asyncio.Event()
        self._room.set()
        self._error: distro.TransportError | None = None
        self._storing: dict[int, asyncio.Future[None]] = {}  # confirmed sends by number
        self._watch: asyncio.Task[None] | None = None
        self._routes = Owners()
        self._routes_read = -_ROUTES_TTL
        self._reading: asyncio.Task[None] | None = None
        self.refused = 0
        """Sends JetStream refused (each raised by the send after it)."""

    async def open(self) -> None:
        """Connect, subscribe to the inbox and make the stream when missing.

        :raises distro.ConnectionError: NATS or JetStream cannot be reached.
        """
        await super().open()
        link = self._link
        assert link is not None
        try:
            await ensure_streams(link, self.jetstream, dead=False)
        except BaseException:
            await self.aclose()
            raise
        link.on_lost = self._lost_link

    # -- sending ----------------------------------------------------------------------------

    async def send(self, data: bytes, message: distro.Message) -> None:
        error = self._error
        if error is not None:
            self._error = None
            raise error
        number, command, size = self._command(data, message)
        link = await self._writable(size)
        self._queue(link, command)
        self._unacked[number] = command
        if len(self._unacked) >= self.jetstream.max_unacked:
            self._room.clear()
            await self._wait_for_room()
        if link.congested:
            await link.written(self.config.connect_timeout)

    async def store(self, data: bytes, message: distro.Message) -> None:
        """Publish ``data`` as :meth:`send` does (``Nats-Msg-Id``, PubAck to the inbox, one of
        the ``max_unacked`` in the window, published again after a reconnection) and return
        once JetStream acknowledged this one: stored, whether or not a member runs
        (``client.send(msg, confirm=True)`` over ``jetstream``).

        :raises distro.TransportError: JetStream refused it (the PubAck's error: no stream
            takes its subject, the stream is full with ``discard`` new...).
        :raises distro.ConnectionError: the client is closed, or NATS cannot be reached.
        """
        if self._closed:
            raise distro.ConnectionError("jetstream transport: the client is closed")
        number, command, size = self._command(data, message)
        while len(self._unacked) >= self.jetstream.max_unacked:
            self._room.clear()
            await self._wait_for_room()
        link = await self._writable(size)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._storing[number] = stored
        try:
            self._queue(link, command)
            self._unacked[number] = command
            if link.congested:
                await link.written(self.config.connect_timeout)
            await stored
        finally:
            if stored.done():
                self._storing.pop(number, None)
            else:
                # The caller's timeout: kept until its PubAck comes, so that a late refusal is
                # logged rather than raised by the next send.
                stored.cancel()

    def _command(self, data: bytes, message: distro.Message) -> tuple[int, bytes, int]:
        """The HPUB of a send (its number, the command, the size NATS counts)."""
        headers = message.headers
        key = (headers["uri"], headers.get("verb"))
        head = self._ack_heads.get(key)
        if head is None:
            subject = message_subject(self.config.prefix, key[0], key[1])
            head = b"H" + _head(subject, self._acks.decode())  # b"HPUB <subject> <inbox>.a."
            head = head[:-1]  # no space: the send's number follows
            if len(self._ack_heads) >= _CACHE_LIMIT:
                self._ack_heads.clear()
            self._ack_heads[key] = head
        self._sent = number = self._sent + 1
        mid = message.id
        marker = (
            b"NATS/1.0\r\nNats-Msg-Id: " + escape(mid).encode() + b"\r\n\r\n"
            if mid
            else (b"NATS/1.0\r\n\r\n")
        )
        command = b"".join(
            (
                head,
                b"%d %d %d\r\n" % (number, len(marker), len(marker) + len(data)),
                marker,
                data,
                _CRLF,
            )
        )
        return number, command, len(marker) + len(data)

    async def request(self, data: bytes, message: distro.Message) -> None:
        if self._closed:
            raise distro.ConnectionError("jetstream transport: the client is closed")
        headers = message.headers
        subject = message_subject(self.config.prefix, headers["uri"], headers.get("verb"))
        if self._routes.owner(subject) is None:
            if asyncio.get_running_loop().time() - self._routes_read > _ROUTES_TTL:
                await self._read_routes()
            if self._routes.owner(subject) is None:
                self._receiver.request_failed(
                    message.id,
                    kit.RequestFailure.NO_RECEIVER,
                    f"no server on {self.config.bus} has registered a route for it",
                )
                return
        await super().request(data, message)

    async def _read_routes(self) -> None:
        """Read the routes stream's subjects again (one read at a time, shared)."""
        task = self._reading
        if task is None or task.done():
            task = self._reading = asyncio.get_running_loop().create_task(self._fetch_routes())
        await asyncio.shield(task)

    async def _fetch_routes(self) -> None:
        link = self._link
        if link is None:
            raise distro.ConnectionError("jetstream transport: the client is not open")
        config = self.jetstream
        js = link.jetstream(timeout=self.config.connect_timeout)
        name = routes_stream_name(config.stream)
        try:
            info = await js.stream_info(name, subjects_filter=">")
        except nats.js.errors.NotFoundError:
            await ensure_streams(link, config, dead=False)
            info = await js.stream_info(name, subjects_filter=">")
        except (nats.errors.Error, OSError) as exc:
            raise distro.ConnectionError(
                f"jetstream transport: reading the routes of {config.prefix}: {exc!r}"
            ) from exc
        self._routes = Owners(routes_subjects(config.prefix, info.state.subjects or {}))
        self._routes_read = asyncio.get_running_loop().time()

    async def _writable(self, size: int) -> Link:
        link = self._link
        if link is None:
            raise distro.ConnectionError("jetstream transport: the client is not open")
        if not link.is_connected:
            link = await self._ready()
        limit = link.max_payload
        if size > limit:
            raise distro.MessageTooLarge(size, limit, "jetstream")
        return link

    @staticmethod
    def _queue(link: Link, command: bytes) -> None:
        # As Link.publish_now, for a command built here (HPUB with a header).
        link._pending.append(command)
        link._pending_data_size += len(command)
        queue = link._flush_queue
        if queue is not None and queue.empty():
            queue.put_nowait(asyncio.get_running_loop().create_future())

    async def _wait_for_room(self) -> None:
        timeout = self.config.connect_timeout
        try:
            await asyncio.wait_for(self._room.wait(), timeout)
        except asyncio.TimeoutError:
            raise distro.ConnectionError(
                f"jetstream transport: JetStream on {self.config.location} acknowledged none "
                f"of {len(self._unacked)} sends within {timeout:g}s (connect_timeout); they "
                "are published again if the connection comes back"
            ) from None

    # -- what comes back to the inbox -------------------------------------------------------

    def _inbox_message(
        self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        acks = self._acks
        if subject.startswith(acks):
            try:
                number = int(subject[len(acks) :])
            except ValueError:
                return
            if self._unacked.pop(number, None) is None:
                return  # the second acknowledgement of a send published again
            stored = self._storing.pop(number, None)
            if stored is not None:
                self._stored(stored, number, data, headers)
            elif headers is not None or _ERROR in data[:16]:
                self._refused(number, data, headers)
            if not self._room.is_set() and len(self._unacked) < self.jetstream.max_unacked:
                self._room.set()
            return
        if headers is None and subject.startswith(self._status) and _ERROR in data[:16]:
            request_id = subject[len(self._status) :].decode("ascii", "replace")
            self._receiver.request_failed(
                unescape(request_id), kit.RequestFailure.REFUSED, _describe(data, headers)
            )
            return
        super()._inbox_message(subject, reply, data, headers)

    def _stored(
        self, stored: asyncio.Future[None], number: int, data: bytes, headers: bytes | None
    ) -> None:
        """A confirmed send's PubAck: it returns, or raises JetStream's refusal."""
        refused = headers is not None or _ERROR in data[:16]
        if stored.done():  # its caller timed out
            if refused:
                log.warning(
                    "jetstream transport: JetStream did not store send #%d (its confirmed send "
                    "had timed out): %s",
                    number,
                    _describe(data, headers),
                )
            return
        if refused:
            self.refused += 1
            why = _describe(data, headers)
            stored.set_exception(
                distro.TransportError(
                    f"jetstream transport: JetStream on {self.config.bus} did not store it: {why}"
                )
            )
        else:
            stored.set_result(None)

    def _refused(self, number: int, data: bytes, headers: bytes | None) -> None:
        self.refused += 1
        why = _describe(data, headers)
        detail = f"JetStream on {self.config.bus} did not store send #{number}: {why}"
        self._error = distro.TransportError(f"jetstream transport: {detail}")
        log.error("jetstream transport: %s", detail)
        self._receiver.unheard(detail)

    # -- faults -----------------------------------------------------------------------------

    def _lost_link(self) -> None:
        self._lost()
        link = self._link
        if self._watch is None and link is not None and not self._closed:
            self._watch = asyncio.get_running_loop().create_task(self._republish(link))

    async def _republish(self, link: Link) -> None:
        try:
            await link.back.wait()
        finally:
            self._watch = None
        if self._closed or not link.is_connected:
            return
        again = [self._unacked[n] for n in sorted(self._unacked)]
        for command in again:
            self._queue(link, command)
        if again:
            log.warning(
                "jetstream transport: published %d unacknowledged sends again after "
                "reconnecting (JetStream stores each once)",
                len(again),
            )

    async def aclose(self) -> None:
        if self._closed:
            return
        link = self._link
        if self._unacked and link is not None and link.is_connected:
            # Give the acknowledgements on their way a moment (bounded) before closing.
            deadline = asyncio.get_running_loop().time() + self.config.connect_timeout
            while self._unacked and asyncio.get_running_loop().time() < deadline:
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
        if self._unacked:
            log.error(
                "jetstream transport: closing with %d sends JetStream has not acknowledged "
                "(they may be lost)",
                len(self._unacked),
            )
        storing, self._storing = self._storing, {}
        for stored in storing.values():
            if not stored.done():
                stored.set_exception(
                    distro.ConnectionError(
                        "jetstream transport: the client closed before JetStream acknowledged it"
                    )
                )
        for task in (self._watch, self._reading):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watch = self._reading = None
        await super().aclose()


def _describe(data: bytes, headers: bytes | None) -> str:
    if headers is not None:
        line = headers.split(b"\r\n", 1)[0].decode(errors="replace")
        if "503" in line:
            return "no stream takes its subject (no responders)"
        return line
    return data.decode(errors="replace")[:300]


class JetStreamTransport(kit.Transport):
    """NATS JetStream: durable, at-least-once delivery to groups (durable pull consumers),
    redelivery and dead letters. Options: those of ``nats`` plus ``stream``, ``max_msgs``,
    ``max_bytes``, ``max_age``, ``storage``, ``replicas``, ``duplicate_window``, ``ack_wait``,
    ``max_deliveries``, ``redelivery_delay``, ``batch``, ``max_ack_pending`` and
    ``max_unacked``; see the README."""

    name = "jetstream"
    capabilities = kit.Capabilities(
        ordered=True,
        reliable=True,
        max_message_size=1024 * 1024 - HEADER_ROOM,
        request_reply=True,
        acknowledgements=True,
        fan_out=True,
        cross_process=True,
        groups=True,
        redelivery=True,
        durable=True,
    )
    api_version = 2

    def __init__(
        self, config: JetStreamConfig, *, options: Mapping[str, Any] | None = None
    ) -> None:
        self.config = config
        self._listener: JetStreamListener | None = None
        if options is not None:
            self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> JetStreamTransport:
        """Read the options (see the README and :mod:`~._jetstream_config`).

        :raises TypeError: an unknown option.
        :raises ValueError: a bad value.
        """
        opts = kit.Options(cls.name, options)
        config = read_jetstream_options(opts)
        limit = opts.integer("max_message_size", 1024 * 1024 - HEADER_ROOM, minimum=1)
        transport = cls(config, options=opts.finish())
        if limit != cls.capabilities.max_message_size:
            transport.capabilities = attrs.evolve(cls.capabilities, max_message_size=limit)
        return transport

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        listener = JetStreamListener(self.config, receiver)
        await listener.open()
        self._listener = listener
        return listener

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        bus = self.config.nats.bus
        connection: NatsConnection
        if target is not None:
            if target[0] != bus:
                raise distro.ConnectionError(
                    f"jetstream transport: RECEIVED target {target[0]}:{target[1]} is not on "
                    f"this bus ({bus}); a server only acknowledges within its bus"
                )
            # RECEIVED goes over core NATS to the target's subject, on the server's connection.
            listener = self._listener
            link = listener.link if listener is not None else None
            connection = NatsConnection(self.config.nats, receiver, target, link)
        else:
            connection = JetStreamConnection(self.config, receiver)
        await connection.open()
        return connection

    def describe(self) -> str:
        group = self.config.group
        where = f"{self.config.nats.bus}, stream {self.config.stream}"
        return f"jetstream({where}{f', group={group}' if group else ''})"
