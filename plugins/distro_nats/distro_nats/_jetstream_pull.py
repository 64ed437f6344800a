"""A server's pulling from its JetStream consumer, and the settling of what it pulled.

One :class:`Puller` per server, on the server's own NATS connection:

* **Pulling.** Pull requests (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``, a batch of
  ``batch`` messages, expiring after :data:`PULL_EXPIRES` seconds) are published with a reply
  subject in an inbox of the puller's; the messages come back on that inbox subscription and
  are handed from nats-py's read loop straight to the core (the lean path of
  :class:`~._link.Link`: no ``Msg``, no task per message). A new pull is sent when less than
  half a batch is still asked for, so JetStream prepares the next while the core handles the
  last; none while the core has paused reading (what was asked for already waits in the
  inlet). An idle server sends one pull per :data:`PULL_EXPIRES`: no spinning.
* **Filtering.** A message whose subject matches none of the server's routes is acknowledged
  and skipped (counted in :attr:`Puller.skipped`): several services may share a prefix, and so
  a stream, each through its own consumers.
* **Settling** (a group member: one :class:`JetStreamPeer` per delivery): ``+ACK`` when the
  handlers finished without raising (HANDLED) or the message can never be handled (DROPPED);
  ``-NAK`` with ``redelivery_delay`` when a handler raised (FAILED), or, once it has been
  delivered ``max_deliveries`` times, the message is published to the group's dead-letter
  subject with the error and then terminated (``+TERM``); RETURNED (the server is closing or
  overloaded) is ``-NAK`` too: without a delay when closing (another member takes it at once;
  a closing server stops pulling), with ``redelivery_delay`` when overloaded. JetStream counts
  every delivery, returned ones included (see the README). Deliveries still being handled
  are kept alive with ``+WPI`` every ``ack_wait / 3``, so only a member that stopped (died)
  has its messages delivered again after ``ack_wait``.
* A server **without a group** acknowledges each message as it takes it (its consumer is
  ``AckAll``, one ``+ACK`` per batch read): its own copy, kept by JetStream across NATS
  restarts and reconnections; no redelivery.
* **Faults.** After a reconnection the consumer (and the streams) are made again if they are
  gone, the pulls lost with the old connection are sent again, and acknowledgements that could
  not be sent meanwhile are sent (JetStream keeps a file-stored consumer's state across its
  restarts).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.nuid import NUID

import distro_core as distro
from distro_core import transport as kit

from ._jetstream_config import JetStreamConfig, dead_subject, redrive_head, route_marks
from ._jetstream_setup import ensure_consumer, ensure_streams
from ._link import Link, log
from .subjects import Owners, plan

__all__ = ["PULL_EXPIRES", "JetStreamPeer", "Puller"]

PULL_EXPIRES = 5.0
"""Seconds a pull request waits in JetStream for messages (an idle server sends one such
request per period)."""

DONE_WINDOW = 100_000
"""Stored messages (stream sequence and timestamp) a group member remembers having handled and
acknowledged: one delivered again (JetStream lost the acknowledgement, say in a restart) is
acknowledged again without being handled."""

MAX_UNSENT = 100_000
"""Acknowledgements kept while NATS is unreachable, sent once it is back; older ones are
dropped (JetStream then delivers those messages again after ``ack_wait``)."""

_ACK = b"+ACK"
_TERM = b"+TERM"
_WPI = b"+WPI"
_NAK = b"-NAK"
_STATUS = b"NATS/1.0 "
_PENDING = b"Nats-Pending-Messages:"


def _deliveries(reply: bytes) -> int:
    """The delivery count in a JetStream ack subject (``$JS.ACK.<stream>.<consumer>.<n>...``,
    or with the domain and account hash tokens of newer servers)."""
    tokens = reply.split(b".")
    index = 4 if len(tokens) == 9 else 6
    try:
        return int(tokens[index])
    except (IndexError, ValueError):
        return 1


def _identity(reply: bytes) -> bytes:
    """The stored message a delivery is of: its stream sequence and timestamp (a sequence
    alone repeats when a stream is made again)."""
    tokens = reply.split(b".")
    at = 5 if len(tokens) == 9 else 7
    return b".".join(tokens[at : at + 3 : 2])


def _stream_seq(reply: bytes) -> int:
    tokens = reply.split(b".")
    index = 5 if len(tokens) == 9 else 7
    try:
        return int(tokens[index])
    except (IndexError, ValueError):
        return 0


class JetStreamPeer(kit.Peer):
    """One delivery to a group member: replies go to the request's inbox, settling acks, naks
    or dead-letters it.

    :ivar reply: the delivery's ack subject.
    :ivar subject: the message's subject.
    :ivar data: the frame.
    """

    __slots__ = ("data", "puller", "reply", "subject")

    settles = True

    def __init__(self, puller: Puller, reply: bytes, data: bytes, subject: bytes) -> None:
        self.host = puller.bus
        self.puller = puller
        self.reply = reply
        self.data = data
        self.subject = subject

    def send(self, data: bytes, reply_to: str) -> None:
        self.puller.reply(data, reply_to)

    def settle(self, outcome: kit.Outcome, detail: str | None = None) -> None:
        try:
            self.puller.settled(self, outcome, detail)
        except Exception:
            log.exception("jetstream transport: settling a delivery failed")


class Puller:
    """Pulls one server's messages from its consumer and settles them (see the module).

    :param config: the options.
    :param link: the server's NATS connection.
    :param inlet: where frames go.
    :param receiver: the core, for counting.
    :param peer: the peer of every frame of a server without a group.
    :param reply: publishes a reply on a requester's inbox (the listener's).
    """

    def __init__(
        self,
        config: JetStreamConfig,
        link: Link,
        inlet: kit.FrameInlet,
        receiver: kit.Receiver,
        peer: kit.Peer,
        reply: Callable[[bytes, str], None],
    ) -> None:
        self.config = config
        self.bus = config.nats.bus
        self.link = link
        self.reply = reply
        self._inlet = inlet
        self._receiver = receiver
        self._peer = peer
        self._loop = asyncio.get_running_loop()
        self._grouped = config.group is not None
        self._inbox = f"{config.nats.inbox_prefix}.{NUID().next().decode()}"
        self._inbox_bytes = self._inbox.encode()
        self._consumer = ""
        self._next_head = b""
        self._pull_body = json.dumps(
            {"batch": config.batch, "expires": int(PULL_EXPIRES * 1e9)}
        ).encode()
        self._credit = 0  # messages asked for and not yet come (nor expired)
        self._pulls = 0
        self._heard = self._loop.time()  # when a message or status last came
        self._sub: Any = None
        self._owners = Owners()
        self._catch_all = False
        self._to_head = f"{config.prefix}._to.".encode()
        self._my_redrive = (
            (redrive_head(config.prefix, config.group) + ".").encode()
            if (config.group is not None)
            else b""
        )
        self._prefix_dot = (config.prefix + ".").encode()
        self._matches: dict[bytes, bool] = {}
        self.inflight: dict[bytes, float] = {}
        """Ack subject -> when it was delivered (or kept alive), for deliveries not settled."""
        self._unsent: list[bytes] = []
        self._done: dict[bytes, None] = {}  # messages handled here (insertion-ordered)
        self._last_seq = 0  # without a group: the stream sequence of the last message taken
        self._last_ack = b""
        self._ack_scheduled = False
        self._draining = False
        self._closing = False
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.skipped = 0
        """Messages acknowledged without being handed on: no route of this server matches."""
        self.dead_lettered = 0
        """Messages this member published to its group's dead-letter subject."""
        self.done_again = 0
        """Messages delivered again after this server had handled and acknowledged them
        (acknowledgements JetStream lost): acknowledged again, not handled."""

    # -- opening ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Make the streams and the consumer when missing, subscribe, start pulling.

        :raises distro.ConnectionError: NATS or JetStream cannot be reached.
        :raises distro.TransportError: JetStream refused.
        """
        link = self.link
        await ensure_streams(link, self.config)
        await self._ensure_consumer()
        await self._register()
        try:
            self._sub = sub = await link.subscribe(self._inbox + ".>")
        except (nats.errors.Error, OSError) as exc:
            raise distro.ConnectionError(f"jetstream transport: subscribing: {exc!r}") from exc
        link.route(sub._id, self._message)
        self._ticker = self._loop.create_task(self._tick())
        self.pull()

    async def _ensure_consumer(self) -> None:
        start = self._last_seq + 1 if self._last_seq else None
        self._consumer = await ensure_consumer(self.link, self.config, start_seq=start)
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.config.stream}.{self._consumer}"
        self._next_head = f"PUB {subject} {self._inbox}.".encode()

    def set_routes(self, routes: Any, catch_all: bool) -> None:
        """Take messages for these routes (the server's, see :func:`~.subjects.plan`), and
        register them in the routes stream (once open)."""
        patterns = plan(self.config.prefix, routes, catch_all)
        new = patterns - set(self._owners.subjects)
        self._owners = Owners(patterns)
        self._catch_all = catch_all
        self._matches.clear()
        if new and self._next_head and not self._closing:
            self._spawn(self._register(new))

    async def _register(self, patterns: frozenset[str] | None = None) -> None:
        """Publish this server's routes to the routes stream (confirmed by JetStream), so that
        clients' requests matching them wait for a server instead of failing at once."""
        marks = route_marks(self.config.prefix, patterns or frozenset(self._owners.subjects))
        js = self.link.jetstream(timeout=self.config.nats.connect_timeout)
        try:
            for mark in marks:
                await js.publish(mark, b"")
        except (nats.errors.Error, OSError) as exc:
            log.error("jetstream transport: registering routes failed: %r", exc)

    # -- pulling ----------------------------------------------------------------------------

    def pull(self) -> None:
        """Ask for another batch, unless enough is asked for already (or the core paused, or
        this server is closing, or NATS is away)."""
        if (
            self._credit > self.config.batch // 2
            or self._inlet.paused
            or self._draining
            or not self._next_head
        ):
            return
        self._pulls += 1
        head = self._next_head + b"%d " % self._pulls
        try:
            self.link.publish_now(head, self._pull_body)
        except distro.TransportError:
            return  # not connected: pulled again once reconnected
        self._credit += self.config.batch

    def _message(self, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        self._heard = self._loop.time()
        if not reply:
            if headers is not None and headers.startswith(_STATUS):
                self._status(subject, headers)
            return
        if self._credit > 0:
            self._credit -= 1
        if self._draining:
            self._send(reply, _NAK)  # this server is closing: for another member, at once
            return
        if subject.startswith(self._to_head):
            # A re-driven dead letter: for one group only.
            if not self._my_redrive or not subject.startswith(self._my_redrive):
                self._skip(reply)
                return
            subject = self._prefix_dot + subject[len(self._my_redrive) :]
        if not self._catch_all and not self._matching(subject):
            self._skip(reply)
            return
        if self._grouped:
            if self._done and _identity(reply) in self._done:
                self.done_again += 1
                self._send(reply, _ACK)
                return
            self.inflight[reply] = self._heard
            self._inlet.deliver(data, JetStreamPeer(self, reply, data, subject))
        else:
            seq = _stream_seq(reply)
            self._ack_later(reply)
            if seq <= self._last_seq:
                self.done_again += 1  # taken before: its acknowledgement was lost
                return
            self._last_seq = seq
            self._inlet.deliver(data, self._peer)
        if self._credit <= self.config.batch // 2:
            self.pull()

    def _matching(self, subject: bytes) -> bool:
        found = self._matches.get(subject)
        if found is None:
            found = self._owners.owner(subject.decode("ascii", "replace")) is not None
            if len(self._matches) >= 4096:
                self._matches.clear()
            self._matches[subject] = found
        return found

    def _skip(self, reply: bytes) -> None:
        self.skipped += 1
        if self._grouped:
            self._send(reply, _ACK)
        else:
            self._last_seq = max(self._last_seq, _stream_seq(reply))
            self._ack_later(reply)

    def _status(self, subject: bytes, headers: bytes) -> None:
        """A pull ended (408: expired; 409: JetStream gave up on it) or a 404/100 status."""
        code = headers[len(_STATUS) : len(_STATUS) + 3]
        if code == b"100":
            return  # an idle heartbeat
        left = self.config.batch
        at = headers.find(_PENDING)
        if at >= 0:
            end = headers.find(b"\r\n", at)
            try:
                left = int(headers[at + len(_PENDING) : end])
            except ValueError:
                pass
        self._credit = max(0, self._credit - left)
        if code == b"409":
            text = headers[len(_STATUS) : headers.find(b"\r\n")].decode(errors="replace")
            log.debug("jetstream transport: pull ended: %s", text)
            if b"Deleted" in headers:  # the consumer is gone: make it again
                self._spawn(self._recover())
                return
            self._loop.call_later(0.2, self.pull)  # not at once: no spinning on a refusal
            return
        self.pull()

    # -- settling ---------------------------------------------------------------------------

    def settled(self, peer: JetStreamPeer, outcome: kit.Outcome, detail: str | None) -> None:
        """Acknowledge, nak or dead-letter one delivery (see the module docstring)."""
        reply = peer.reply
        self.inflight.pop(reply, None)
        if outcome is kit.Outcome.HANDLED or outcome is kit.Outcome.DROPPED:
            self._send(reply, _ACK)
            done = self._done
            done[_identity(reply)] = None
            if len(done) > DONE_WINDOW:
                del done[next(iter(done))]
        elif outcome is kit.Outcome.FAILED:
            deliveries = _deliveries(reply)
            if deliveries >= self.config.max_deliveries:
                self._spawn(self._dead_letter(peer, detail or "handler failed", deliveries))
            else:
                self._nak(reply, self.config.redelivery_delay)
        elif detail == "closing":
            self._nak(reply, 0.0)
            self.drain()
        else:  # overloaded: offered again after a while
            self._nak(reply, self.config.redelivery_delay)

    def _nak(self, reply: bytes, delay: float) -> None:
        if delay <= 0:
            self._send(reply, _NAK)
        else:
            self._send(reply, b'-NAK {"delay":%d}' % int(delay * 1e9))

    def _send(self, reply: bytes, what: bytes) -> None:
        command = b"PUB " + reply + b" "
        try:
            self.link.publish_now(command, what)
        except distro.TransportError:
            if len(self._unsent) < MAX_UNSENT:
                self._unsent.append(command)
                self._unsent.append(what)

    def _ack_later(self, reply: bytes) -> None:
        """Without a group (AckAll): acknowledge up to ``reply`` with the loop iteration's
        others, in one ``+ACK``."""
        self._last_ack = reply
        if not self._ack_scheduled:
            self._ack_scheduled = True
            self._loop.call_soon(self._ack_all)

    def _ack_all(self) -> None:
        self._ack_scheduled = False
        if self._last_ack:
            self._send(self._last_ack, _ACK)
            self._last_ack = b""

    async def _dead_letter(self, peer: JetStreamPeer, error: str, deliveries: int) -> None:
        config = self.config
        group = config.group or ""
        subject = dead_subject(config.prefix, group)
        headers = {
            "Distro-Error": json.dumps(error),
            "Distro-Group": json.dumps(group),
            "Distro-Deliveries": str(deliveries),
            "Distro-Subject": json.dumps(peer.subject.decode("ascii", "replace")),
            "Distro-Stream-Seq": str(_stream_seq(peer.reply)),
        }
        js = self.link.jetstream(timeout=config.nats.connect_timeout)
        try:
            ack = await js.publish(subject, peer.data, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            log.error(
                "jetstream transport: cannot store a dead letter of group %r on %s: %r; "
                "the message is delivered again",
                group,
                subject,
                exc,
            )
            self._nak(peer.reply, max(config.redelivery_delay, 1.0))
            return
        self.dead_lettered += 1
        log.warning(
            "jetstream transport: group %r gave up on a message after %d deliveries; dead "
            "letter %d in stream %s: %s",
            group,
            deliveries,
            ack.seq,
            ack.stream,
            error,
        )
        self._send(peer.reply, _TERM)

    # -- keeping alive, recovering ----------------------------------------------------------

    async def _tick(self) -> None:
        """Keep this member's deliveries alive, and pull again when a pull went missing."""
        keep = max(0.05, self.config.ack_wait / 3)
        period = min(keep, 1.0)
        while not self._closing:
            await asyncio.sleep(period)
            now = self._loop.time()
            old = [r for r, since in self.inflight.items() if now - since >= keep]
            for reply in old:
                self.inflight[reply] = now
                self._send(reply, _WPI)
            if self._credit and now - self._heard > PULL_EXPIRES + 2.0:
                self._credit = 0  # pulls lost with a connection: ask again
                self._heard = now
            if self.link.is_connected:
                self.pull()  # (a no-op when enough is asked for)

    def reconnected(self) -> None:
        """NATS is back: make what is gone again, send what waited, pull again."""
        self._spawn(self._recover())

    async def _recover(self) -> None:
        try:
            await ensure_streams(self.link, self.config)
            await self._register()
            if self._grouped:
                await self._ensure_consumer()
            else:
                await self._check_ephemeral()
        except (distro.TransportError, nats.errors.Error, OSError) as exc:
            log.warning("jetstream transport: after reconnecting: %r", exc)
            self._loop.call_later(1.0, self.reconnected)
            return
        unsent, self._unsent = self._unsent, []
        for at in range(0, len(unsent), 2):
            self._send(unsent[at], unsent[at + 1])
        self._credit = 0
        self.pull()

    async def _check_ephemeral(self) -> None:
        js = self.link.jetstream(timeout=self.config.nats.connect_timeout)
        try:
            await js.consumer_info(self.config.stream, self._consumer)
        except nats.js.errors.NotFoundError:
            stream = await js.stream_info(self.config.stream)
            if (stream.state.last_seq or 0) < self._last_seq:
                self._last_seq = 0  # the stream was made again: from its start
            log.warning(
                "jetstream transport: consumer %s is gone; a new one goes on from message %d",
                self._consumer,
                self._last_seq + 1,
            )
            self._unsent.clear()  # for the old consumer
            await self._ensure_consumer()
        except (nats.errors.Error, OSError) as exc:
            raise distro.ConnectionError(f"jetstream transport: consumer info: {exc!r}") from exc

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- closing ----------------------------------------------------------------------------

    def drain(self) -> None:
        """Pull no more: what still comes (asked for before) is handed back at once."""
        if self._draining:
            return
        self._draining = True
        sub, self._sub = self._sub, None
        if sub is not None:
            # JetStream drops the waiting pull requests of an inbox nobody listens to; what it
            # sent before it noticed still comes here (the route stays) and is handed back.
            self._spawn(_unsubscribe(sub))

    async def aclose(self) -> None:
        """Stop pulling; hand back (nak) what this member took and did not settle."""
        if self._closing:
            return
        self.drain()
        self._closing = True
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        self._ack_all()
        for reply in list(self.inflight):
            self._send(reply, _NAK)
        self.inflight.clear()
        try:
            await self.link.flush(1)
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            log.debug("jetstream transport: flushing at close: %r", exc)


async def _unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except (nats.errors.Error, OSError) as exc:
        log.debug("jetstream transport: unsubscribing: %r", exc)
