"""The ``nats`` transport (core NATS): servers subscribe, clients publish, replies to inboxes.

* A server (:class:`NatsListener`) holds one NATS connection. It subscribes to its routes'
  subjects (:mod:`._subjects`), in a queue group when made with ``group=`` (each message to
  one member), and to its own RECEIVED subject ``<prefix>._ack.<n>``: ``n`` is a number it
  claimed on the bus, so its address is ``(bus, n)`` and ``{"address": bus, "port": n}``
  headers send RECEIVED to it. Every frame it receives has ``peer.host == bus``. nats-py
  reconnects and resubscribes by itself when the NATS server restarts.
* A client (:class:`NatsConnection`) holds one NATS connection and ONE subscription, its inbox
  ``<inbox prefix>.<unique>.>``: replies come to ``<inbox>.r`` (its ``reply_to``). Each
  publish carries a NATS reply subject in that inbox, so a NATS server that has no subscriber
  for a message answers at once with a "no responders" status: a request then fails at once
  (``request_failed`` NO_RECEIVER), a one-way send is reported ``unheard`` (counted in
  ``client.stats.unheard``). Nothing is ever buffered across an outage: a send while the
  connection is down waits up to ``connect_timeout`` for nats-py to reconnect, then raises
  :class:`distro.ConnectionError`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any

import attrs
import nats.errors
from nats.nuid import NUID

import distro_core as distro
from distro_core import transport as kit

from ._config import NatsConfig, read_options
from ._link import NATS_ERRORS, Link, connect, log
from .subjects import MAX_SUBJECT, Owners, ack_subject, escape, message_subject, plan, unescape

__all__ = ["NatsConnection", "NatsListener", "NatsTransport"]

CLAIM_TRIES = 16
"""How many random address ports a server tries before giving up (each is one round trip)."""

MAX_STATUS_ID = 200
"""Request ids longer than this (escaped) get no no-responders check (subject length)."""

_CACHE_LIMIT = 4096
_NO_RESPONDERS = b"NATS/1.0 503"


def _head(subject: str, reply: str = "") -> bytes:
    if len(subject) > MAX_SUBJECT:
        raise distro.MessageError(
            f"nats transport: the uri makes a subject of {len(subject)} bytes; "
            f"at most {MAX_SUBJECT} are sent (the server's max_control_line)"
        )
    return f"PUB {subject} {reply} ".encode() if reply else f"PUB {subject} ".encode()


class NatsListener(kit.Listener):
    """A server's NATS connection: its routes' subscriptions and its RECEIVED subject."""

    def __init__(self, config: NatsConfig, receiver: kit.Receiver) -> None:
        self.config = config
        self._receiver = receiver
        self._peer = kit.BusPeer(config.bus, self.reply)
        self._inlet = kit.FrameInlet(receiver)
        self._held_bytes = 0
        self._link: Link | None = None
        self._subs: dict[str, Any] = {}  # subject -> nats-py Subscription
        self._owners = Owners()
        self._queue = escape(config.group) if config.group else ""
        self._inbox = config.inbox_prefix + "."
        self._heads: dict[str, bytes] = {}
        self._ack = ""
        self._closing = False
        self._changing: asyncio.Task[None] | None = None
        self.address = (config.bus, 0)

    @property
    def link(self) -> Link | None:
        """The NATS connection (None before :meth:`open` and after :meth:`aclose`)."""
        return self._link

    # -- opening ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, claim an address port, subscribe, and wait until NATS confirmed it all.

        :raises distro.ConnectionError: NATS cannot be reached.
        :raises distro.AddressInUse: the ``port`` asked for is taken on this bus.
        """
        config = self.config
        self._link = link = await connect(config, role="server")
        link.on_lost = self._lost
        try:
            port = await self._claim(link)
            await self._subscribe(self._wanted())
            await link.flush(max(1, int(config.connect_timeout)))
        except BaseException as exc:
            self._closing = True
            await _close(link)
            self._link = None
            if isinstance(exc, (nats.errors.Error, OSError)):
                context = f"nats transport: subscribing on {config.location}"
                raise kit.map_error(exc, context, table=NATS_ERRORS) from exc
            raise
        self.address = (config.bus, port)

    def _lost(self) -> None:
        log.warning("nats transport: server on %s lost NATS; reconnecting", self.config.bus)

    async def _claim(self, link: Link) -> int:
        """Subscribe to a free RECEIVED subject; its number is this server's address port.

        A number is free when a request on its subject finds no responder (every server
        answers such probes on its own RECEIVED subject).
        """
        config = self.config
        wanted = config.port
        tries = [wanted] if wanted else [random.randrange(1, 65536) for _ in range(CLAIM_TRIES)]
        for port in tries:
            subject = ack_subject(config.prefix, port)
            try:
                await link.request(subject, b"", timeout=min(config.connect_timeout, 1.0))
            except nats.errors.NoRespondersError:
                sub = await link.subscribe(subject)
                link.route(sub._id, self._ack_received)
                self._ack = subject
                return port
            except nats.errors.TimeoutError:
                pass  # a subscriber that does not answer: not ours to take
        if wanted:
            raise distro.AddressInUse(
                f"nats transport: port {wanted} is already taken on {config.bus}"
            )
        raise distro.AddressInUse(
            f"nats transport: no free address port on {config.bus} after {CLAIM_TRIES} tries"
        )

    def _ack_received(
        self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if not data:
            if reply and self._link is not None:  # another server probing this number
                try:
                    self._link.publish_now(b"PUB " + reply + b" ", b"taken")
                except distro.ConnectionError:
                    pass
            return
        self._take(data)

    # -- subscriptions ----------------------------------------------------------------------

    def _wanted(self) -> frozenset[str]:
        receiver = self._receiver
        return plan(self.config.prefix, receiver.routes, receiver.has_catch_all)

    async def _subscribe(self, wanted: frozenset[str]) -> None:
        link = self._link
        if link is None:
            return
        for subject in sorted(wanted - set(self._subs)):
            if len(subject) > MAX_SUBJECT:
                log.error("nats transport: route subject too long, not subscribed: %.80s", subject)
                continue
            sub = await link.subscribe(subject, queue=self._queue)
            link.route(sub._id, self._deliverer(subject))
            self._subs[subject] = sub
        for subject in sorted(set(self._subs) - wanted):
            sub = self._subs.pop(subject)
            link.routes.pop(sub._id, None)
            await sub.unsubscribe()
        self._owners.update(self._subs)

    def _deliverer(self, mine: str) -> Any:
        owners = self._owners
        take = self._take
        grouped = bool(self._queue)

        def deliver(subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            # Overlapping subscriptions each get the message; one takes it. Within a queue
            # group NATS already picked one subscription of all the members'.
            if owners.check and not grouped:
                owner = owners.owner(subject.decode("ascii", "replace"))
                if owner is not None and owner != mine:
                    return
            take(data)

        return deliver

    def _take(self, data: bytes) -> None:
        inlet = self._inlet
        if inlet.paused or inlet.held:
            config = self.config
            if (
                inlet.held >= config.pending_msgs_limit
                or self._held_bytes + len(data) > config.pending_bytes_limit
            ):
                self._receiver.frame_dropped(
                    "slow_consumer",
                    f"nats transport: server on {config.bus} holds {inlet.held} messages "
                    f"({self._held_bytes} bytes) while its handlers are busy; "
                    "pending_msgs_limit/pending_bytes_limit reached",
                )
                return
            self._held_bytes += len(data)
        inlet.deliver(data, self._peer)

    def routes_changed(self) -> None:
        if self._link is None or self._closing:
            return
        previous = self._changing

        async def change() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await self._subscribe(self._wanted())
            except (nats.errors.Error, OSError) as exc:
                log.error("nats transport: resubscribing failed: %r", exc)

        self._changing = asyncio.get_running_loop().create_task(change())

    # -- replies ----------------------------------------------------------------------------

    def reply(self, data: bytes, reply_to: str) -> None:
        """Publish a reply on the requesting client's inbox (see
        :meth:`distro_core.transport.Peer.send`).

        :raises distro.TransportError: ``reply_to`` is not an inbox subject (a server publishes
            only there, whatever a request says).
        :raises distro.ConnectionError: NATS is unreachable just now.
        """
        head = self._heads.get(reply_to)
        if head is None:
            if (
                not reply_to.startswith(self._inbox)
                or not reply_to.isascii()
                or len(reply_to) > 256
                or any(c in reply_to for c in " \t\r\n*>")
            ):
                raise distro.TransportError(
                    f"nats transport: replyTo {reply_to!r:.80} is not an inbox subject "
                    f"({self._inbox}...); reply not sent"
                )
            head = f"PUB {reply_to} ".encode()
            if len(self._heads) >= _CACHE_LIMIT:
                self._heads.clear()
            self._heads[reply_to] = head
        link = self._link
        if link is None:
            raise distro.ConnectionError("nats transport: the server is closed; reply dropped")
        try:
            link.publish_now(head, data)
        except distro.ConnectionError:
            raise distro.ConnectionError(
                f"nats transport: NATS at {self.config.location} is unreachable; reply dropped"
            ) from None

    # -- flow control -----------------------------------------------------------------------

    def pause_reading(self) -> None:
        self._inlet.pause()

    def resume_reading(self) -> None:
        if self._inlet.resume() or not self._inlet.held:
            self._held_bytes = 0

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._closing and self._link is None:
            return
        self._closing = True
        changing, self._changing = self._changing, None
        if changing is not None and not changing.done():
            changing.cancel()
            await asyncio.gather(changing, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            link.routes.clear()
            await _close(link)
        discarded = self._inlet.close()
        for _ in range(discarded):
            self._receiver.frame_dropped(
                "closing",
                f"nats transport: a frame held while paused, server on {self.config.bus}",
            )


async def _close(link: Link) -> None:
    try:
        await asyncio.wait_for(link.close(), 2.0)
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
        log.debug("nats transport: closing: %r", exc)


class NatsConnection(kit.Connection):
    """A client's NATS connection and its inbox subscription.

    With ``target`` (a RECEIVED link the core opens to another server), every frame goes to
    that server's RECEIVED subject, and no inbox is needed.
    """

    def __init__(
        self,
        config: NatsConfig,
        receiver: kit.ClientReceiver,
        target: tuple[str, int] | None = None,
        link: Link | None = None,
    ) -> None:
        self.config = config
        self._receiver = receiver
        self._link = link
        self._owns_link = link is None
        self._fixed = _head(ack_subject(config.prefix, target[1])) if target is not None else None
        self._replies = target is None
        inbox = f"{config.inbox_prefix}.{NUID().next().decode()}"
        self._inbox = inbox
        self.reply_to = f"{inbox}.r" if self._replies else ""
        self._reply_sid = -1
        self._status = f"{inbox}.s.".encode()
        self._unheard_reply = f"{inbox}.u"
        self._heads: dict[tuple[str, str | None], bytes] = {}
        self._closed = False

    async def open(self) -> None:
        """Connect (and subscribe to the inbox, confirmed before this returns).

        :raises distro.ConnectionError: NATS cannot be reached.
        """
        if self._link is not None:
            return
        self._link = link = await connect(self.config, role="client")
        if not self._replies:
            return
        link.on_lost = self._lost
        try:
            sub = await link.subscribe(f"{self._inbox}.>")
            link.route(sub._id, self._inbox_message)
            await link.flush(max(1, int(self.config.connect_timeout)))
        except (nats.errors.Error, OSError) as exc:
            await _close(link)
            self._link = None
            context = f"nats transport: subscribing to an inbox on {self.config.location}"
            raise kit.map_error(exc, context, table=NATS_ERRORS) from exc

    def _lost(self) -> None:
        if self._closed:
            return
        self._receiver.connection_lost(
            distro.ConnectionError(
                f"nats transport: lost the connection to {self.config.location}; "
                "replies sent meanwhile are lost"
            )
        )

    def _inbox_message(
        self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        if headers is None:
            if subject.endswith(b".r"):
                self._receiver.frame_received(data)
            return
        if not headers.startswith(_NO_RESPONDERS):
            return
        if subject.startswith(self._status):
            request_id = unescape(subject[len(self._status) :].decode("ascii", "replace"))
            self._receiver.request_failed(
                request_id,
                kit.RequestFailure.NO_RECEIVER,
                f"no server on {self.config.bus} subscribes to its subject",
            )
        elif subject.endswith(b".u"):
            self._receiver.unheard(
                f"no server on {self.config.bus} subscribes to its subject "
                "(lost: core NATS keeps nothing)"
            )

    kind = "nats"
    """The transport's name, for error texts."""

    async def _ready(self) -> Link:
        """The link, once connected: waits up to ``connect_timeout`` for a reconnection
        (polling too: nats-py says it is reconnecting before its disconnected callback clears
        ``back``, so the event alone can say "back" while the link is down).

        :raises distro.ConnectionError: not connected within ``connect_timeout``, or closed.
        """
        link = self._link
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout
        while True:
            if link is None or self._closed or link.is_closed:
                raise distro.ConnectionError(
                    f"{self.kind} transport: the connection to {self.config.location} is closed"
                )
            if link.is_connected:
                return link
            left = deadline - loop.time()
            if left <= 0:
                raise distro.ConnectionError(
                    f"{self.kind} transport: NATS at {self.config.location} is unreachable "
                    f"(not back within connect_timeout={self.config.connect_timeout:g}s)"
                )
            try:
                await asyncio.wait_for(link.back.wait(), min(left, 0.05))
            except asyncio.TimeoutError:
                continue
            if not link.is_connected:
                await asyncio.sleep(min(left, 0.01))

    def _subject_head(self, message: distro.Message, reply: str) -> bytes:
        headers = message.headers
        subject = message_subject(self.config.prefix, headers["uri"], headers.get("verb"))
        return _head(subject, reply)

    async def send(self, data: bytes, message: distro.Message) -> None:
        head = self._fixed
        if head is None:
            headers = message.headers
            key = (headers["uri"], headers.get("verb"))
            head = self._heads.get(key)
            if head is None:
                head = self._subject_head(message, self._unheard_reply)
                if len(self._heads) >= _CACHE_LIMIT:
                    self._heads.clear()
                self._heads[key] = head
        await self._publish(head, data)

    async def request(self, data: bytes, message: distro.Message) -> None:
        token = escape(message.id) if message.id else "%"
        reply = f"{self._inbox}.s.{token}" if len(token) <= MAX_STATUS_ID else ""
        await self._publish(self._subject_head(message, reply), data)

    async def _publish(self, head: bytes, data: bytes) -> None:
        link = self._link
        if link is None:
            raise distro.ConnectionError("nats transport: the client is not open")
        try:
            link.publish_now(head, data)
        except distro.ConnectionError:
            link = await self._ready()  # down: wait (bounded) for nats-py to reconnect
            link.publish_now(head, data)
        if link.congested:
            await link.written(self.config.connect_timeout)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        link = self._link
        if link is not None and self._owns_link:
            link.routes.clear()
            await _close(link)


class NatsTransport(kit.Transport):
    """Core NATS. Options: ``url`` (one URL or a list) or ``address`` (a bus), ``prefix``,
    ``group``, ``port``, ``connect_timeout``, TLS and credentials...; see the README."""

    name = "nats"
    capabilities = kit.Capabilities(
        ordered=True,
        reliable=True,
        max_message_size=1024 * 1024,
        request_reply=True,
        acknowledgements=True,
        fan_out=True,
        cross_process=True,
        groups=True,
    )
    api_version = 2

    def __init__(self, config: NatsConfig, *, options: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self._listener: NatsListener | None = None
        if options is not None:
            self.options = options

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> NatsTransport:
        """Read the options (see the README and :mod:`~._config`).

        :raises TypeError: an unknown option.
        :raises ValueError: a bad value.
        """
        opts = kit.Options(cls.name, options)
        config = read_options(opts)
        limit = opts.integer("max_message_size", 1024 * 1024, minimum=1)
        transport = cls(config, options=opts.finish())
        if limit != cls.capabilities.max_message_size:
            transport.capabilities = attrs.evolve(cls.capabilities, max_message_size=limit)
        return transport

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        listener = NatsListener(self.config, receiver)
        await listener.open()
        self._listener = listener
        return listener

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        if target is not None and target[0] != self.config.bus:
            raise distro.ConnectionError(
                f"nats transport: RECEIVED target {target[0]}:{target[1]} is not on this "
                f"bus ({self.config.bus}); a nats server only acknowledges within its bus"
            )
        # A server's RECEIVED go out on its own NATS connection.
        listener = self._listener if target is not None else None
        link = listener.link if listener is not None else None
        connection = NatsConnection(self.config, receiver, target, link)
        await connection.open()
        return connection

    def describe(self) -> str:
        return f"nats({self.config.bus})"
