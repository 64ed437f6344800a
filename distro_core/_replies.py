"""What a server sends back to a peer: replies, error replies and RECEIVED acknowledgements,
and the rules that bound them (:class:`Replies`, which the server holds).

* A request's ``replyTo`` must be text; a request whose ``replyTo`` is anything else is not
  answered (counted ``invalid_reply_to``: ``str()`` of a deeply nested list would recurse).
* **No amplification.** Over a transport whose source addresses can be forged (datagrams:
  ``Capabilities.reliable`` is false), what the server sends that no handler produced, error
  replies and RECEIVED, is never larger than the frame that asked for it: an error reply is cut
  to fit (its text shortened, its null payload left out), and one that cannot fit, or a
  RECEIVED larger than its message, is not sent (counted ``amplification``). A reply carrying
  a handler's value is the handler's business (docs/security.md).
* A reply the transport cannot send is counted ``reply_failed``.

Refusing a message (:meth:`Replies.refuse`) is counting it dropped and settling its frame;
one the closing server refuses is answered ``closing`` at once when it is a request
(:meth:`Replies.closing`), on transports whose requests have one server (not pub/sub).
"""

from __future__ import annotations

import asyncio

from . import _protocol
from ._acks import Acknowledger, Failure, normalise
from ._acks import _is_ip as is_ip
from ._exceptions import MessageError, TransportError
from ._message import Message, new_message, parse_parts
from ._stats import ServerLog, ServerStats
from ._transport import Outcome, Peer, Transport

__all__ = ["Replies", "settle_unfinished"]

_OVERLOADED = "the server is overloaded: its queues are full; try again later"
_CLOSING = "the server is closing: it did not handle the request; try again, or elsewhere"


class Replies:
    """Sends a server's replies and acknowledgements, counted in its stats.

    :param transport: the server's transport (its capabilities decide the bounds).
    :param stats: the server's counters.
    :param log: the server's log.
    :param ack_any_address: see :class:`~distro_core.Server`.
    """

    __slots__ = (
        "_answers",
        "_any_address",
        "_limit",
        "_log",
        "_name",
        "_spoofable",
        "_stats",
        "acks",
    )

    def __init__(
        self, transport: Transport, stats: ServerStats, log: ServerLog, ack_any_address: bool
    ) -> None:
        self._stats = stats
        self._log = log
        self._name = transport.name
        self._limit = transport.capabilities.max_message_size
        self._spoofable = not transport.capabilities.reliable
        self._any_address = ack_any_address
        # Over pub/sub another server may take what this one refuses: it does not answer.
        caps = transport.capabilities
        self._answers = caps.request_reply and not caps.fan_out
        # Acknowledgements run apart from handlers: they never take a max_concurrency slot.
        self.acks = Acknowledger(transport, any_address=ack_any_address, report=self.acknowledged)

    def overloaded(self, msg: Message, peer: Peer, data: bytes) -> None:
        """Answer the request ``msg`` at once: the server sheds it (code ``overloaded``)."""
        limit = len(data) if self._spoofable else self._limit
        self.send(msg, peer, _protocol.error_reply(msg, _OVERLOADED, _protocol.OVERLOADED, limit))

    def refuse(self, peer: Peer, reason: str, detail: str) -> None:
        """Drop a message before any handler ran: count and log it, and settle it: returned
        when this server could not take it (another member may), else dropped."""
        self._log.dropped(reason, detail)
        if peer.settles:
            peer.settle(Outcome.RETURNED if reason in _NOT_TAKEN else Outcome.DROPPED, reason)

    def closing(self, msg: Message, peer: Peer, data: bytes, detail: str) -> None:
        """Refuse ``msg`` (which came as ``data``): the server is closing. A request is
        answered at once with the code ``closing`` (its sender may try again, elsewhere)."""
        self.refuse(peer, "closing", f"message {msg.id}: {detail}")
        if self._answers and "replyTo" in msg.headers:
            limit = len(data) if self._spoofable else self._limit
            self.send(msg, peer, _protocol.error_reply(msg, _CLOSING, _protocol.CLOSING, limit))

    def closing_frame(self, data: bytes, peer: Peer) -> None:
        """Refuse a frame that came while the server was closing (see :meth:`closing`)."""
        try:
            msg = new_message(*parse_parts(data), {}, None)
        except MessageError:
            self.refuse(peer, "closing", f"from {peer.host}: server is closing")
        else:
            self.closing(msg, peer, data, "server is closing")

    def send(self, msg: Message, peer: Peer, reply: bytes | None) -> None:
        """Send ``reply`` to the request ``msg`` (the server sends the common ones itself);
        None: it would have amplified."""
        reply_to = msg.headers["replyTo"]
        if type(reply_to) is not str:
            self._log.dropped("invalid_reply_to", f"request {msg.id}: 'replyTo' is not a string")
        elif reply is None:
            self._log.dropped(
                "amplification", f"no error reply to {msg.id}: larger than the request"
            )
        else:
            try:
                peer.send(reply, reply_to)
            except TransportError as exc:
                self.failed(msg, exc)
            else:
                self._stats.replies_sent += 1

    def failed(self, msg: Message, exc: TransportError) -> None:
        """The transport could not send the reply to ``msg``."""
        self._log.dropped("reply_failed", f"reply to {msg.id}: {exc}")

    def acknowledge(self, msg: Message, peer: Peer, data: bytes) -> None:
        """Send RECEIVED for ``msg`` (which came as ``data``) if its headers ask for it."""
        target = _protocol.ack_target(msg)
        if target is None:
            return
        if not _resolvable(target[0]):
            # A lookup would raise UnicodeError (an empty label, one over 63 characters),
            # which a transport may not map to a TransportError: refused here, counted.
            self._log.dropped("ack_refused", f"message {msg.id} names no host a lookup takes")
            return
        if (
            self._spoofable
            and _protocol.received_size(msg.id) > len(data)
            and not self._refused(target[0], peer)
        ):
            self._log.dropped(
                "amplification",
                f"no RECEIVED for {msg.id}: larger than the {len(data)} bytes that asked for it",
            )
            return
        failure = self.acks.submit(msg, target, peer)
        if failure is not None:
            self._log.dropped(*failure)

    def _refused(self, host: object, peer: Peer) -> bool:
        """Whether the acknowledger will refuse ``host`` as not the sender's, which it tells
        without a lookup for an IP address (and counts as ``ack_refused``)."""
        if self._any_address or not isinstance(host, str):
            return False
        canonical = normalise(host)
        return is_ip(canonical) and canonical != normalise(peer.host or "")

    def acknowledged(self, failure: Failure | None) -> None:
        """An acknowledgement started by :meth:`acknowledge` ended."""
        if failure is None:
            self._stats.acks_sent += 1
        else:
            self._log.dropped(*failure)


def _resolvable(host: str) -> bool:
    """Whether ``host`` can be handed to a name lookup (it encodes as IDNA)."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


_NOT_TAKEN = frozenset({"closing", "overload"})
"""Drop reasons that are this server's, not the message's: settled as RETURNED."""


def settle_unfinished(peer: Peer, task: asyncio.Task[None]) -> None:
    """Settle the frame a handling task was for, when the task ended before the server
    finished the message (a done callback, added only for peers that settle)."""
    # Cancelled by aclose's time-out (perhaps before its first step) or ended by an error of
    # the server's own, the task never reached _finish: the handlers did not finish, so a
    # transport with redelivery offers the frame again (without counting a failure when the
    # server closing cut it short).
    if task.cancelled():
        peer.settle(Outcome.RETURNED, "closing")
    elif task.exception() is not None:
        peer.settle(Outcome.FAILED, f"internal error: {task.exception()!r}")
