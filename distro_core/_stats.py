"""What a server counts (:class:`ServerStats`, read as ``server.stats``) and the log lines that
go with the counts (:class:`ServerLog`)."""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

import attrs

from ._dispatch import HandlerTimeout
from ._exceptions import Reject
from ._logging import Log, Logger, RateLimitedLog

if TYPE_CHECKING:
    from ._handlers import Entry
    from ._message import Message

__all__ = ["ClientStats", "ServerLog", "ServerStats"]


@attrs.define
class ServerStats:
    """Counters of what a server has seen since it started.

    :ivar received: frames taken from the transport.
    :ivar handled: messages dispatched to at least one handler and finished.
    :ivar dropped: frames, messages, replies and acknowledgements dropped, by reason. Frames
        and messages: ``invalid``, ``no_route``, ``overload`` (shed: the server's queues were
        full; a request is answered ``overloaded``), ``expired`` (a queued request whose
        caller's deadline passed), ``closing`` (it came, or still waited for its turn, while
        the server closed; a request is answered ``closing``), ``internal`` (the server's own
        error), and the transports' (``too_large``, ``truncated``...). Replies and
        acknowledgements not sent: ``reply_failed``, ``invalid_reply_to`` (a request whose
        ``replyTo`` is not text), ``amplification`` (an error reply or RECEIVED that would have
        been larger than the datagram that asked for it; a cached reply to a repeat shorter
        than the first delivery), ``ack_refused``, ``ack_failed``, ``ack_timeout``,
        ``ack_overload``.
    :ivar handler_errors: handler calls that raised (a :class:`~distro_core.Reject` is counted
        in ``rejected`` instead).
    :ivar rejected: handler calls that raised :class:`~distro_core.Reject`: expected failures,
        answered as they are and logged at INFO without a traceback.
    :ivar handler_timeouts: async handler calls cancelled at their deadline.
    :ivar cancelled: handler runs cancelled when ``aclose`` gave up waiting for them: their
        messages were neither handled nor dropped.
    :ivar replies_sent: replies (and error replies) sent to requests, a reply sent again to a
        repeat included.
    :ivar acks_sent: RECEIVED acknowledgements sent.
    :ivar repeats: confirmed requests (``"confirm": true``) that came again while this server
        remembered their id: no handler ran; the reply the first got was sent again, or
        nothing while the first was still being handled.
    """

    received: int = 0
    handled: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)
    handler_errors: int = 0
    rejected: int = 0
    handler_timeouts: int = 0
    cancelled: int = 0
    replies_sent: int = 0
    acks_sent: int = 0
    repeats: int = 0

    @property
    def dropped_total(self) -> int:
        """All dropped frames and messages, whatever the reason."""
        return sum(self.dropped.values())


@attrs.define
class ClientStats:
    """Counters of what a client has sent and been sent since it opened (``client.stats``).

    :ivar sent: one-way messages handed to the transport (a confirmed send counts once).
    :ivar requests: requests sent (confirmed sends included), each counted once.
    :ivar confirmed: confirmed sends that the server confirmed.
    :ivar resent: frames sent again for a confirmed send (a retransmitted datagram, a send
        repeated after a reconnection or on another server).
    :ivar unheard: one-way sends the transport reports no receiver heard (a redis ``PUBLISH``
        that reached no subscriber): lost, and logged.
    :ivar late: replies that matched no waiting request (it had timed out, or was answered
        already, or its id was never sent): ignored.
    :ivar invalid: frames sent back that were not replies: ignored, and logged.
    :ivar members_down: times a server of ``servers=`` was found down and skipped.
    :ivar refused: frames sent back that a middleware refused (docs/middleware.md), by
        reason (``bad_signature``, ``replayed``...): dropped, and logged; and under
        ``middleware_error`` the client hooks that raised (``reply_received``: the frame is
        dropped; ``finished``: only logged).
    """

    sent: int = 0
    requests: int = 0
    confirmed: int = 0
    resent: int = 0
    unheard: int = 0
    late: int = 0
    invalid: int = 0
    members_down: int = 0
    refused: dict[str, int] = attrs.field(factory=dict)


class ServerLog:
    """What happens to a server, logged: its start, the signal that stops it, the drain and
    the close (INFO); and what goes wrong, counted in its :class:`ServerStats` and logged:
    dropped frames, failed handlers, handlers cancelled at close and the server's own errors.

    Every line carries structured fields (``extra``): ``event``, ``transport``, and where
    known ``msg_id``, ``uri``, ``verb``, ``handler``, ``reason``, ``address``. A failed handler's
    exception is the record's ``exc_info``.

    Every line a peer can cause per frame is rate-limited (:class:`RateLimitedLog`: a few
    lines per reason, or per handler and exception type, every ten seconds, then a count of
    those suppressed), so a flood of bad frames or of requests that make a handler fail cannot
    flood the log too; each one is still counted.

    :param stats: the server's counters.
    :param logger: the server's logger.
    :param transport: the transport's name, a field of every line.
    """

    __slots__ = ("_log", "_quiet", "_stats")

    def __init__(self, stats: ServerStats, logger: Logger, transport: str = "") -> None:
        self._stats = stats
        self._log = Log(logger, transport=transport)
        self._quiet = RateLimitedLog(self._log)

    def started(self, where: str, address: tuple[str, int]) -> None:
        """Log that the server listens on ``address`` (``where``: the transport's text)."""
        host, port = address
        self._log.log(
            logging.INFO,
            "distro: serving %s on %s",
            where,
            _where(host, port),
            extra={"event": "started", "address": _where(host, port), "port": port},
        )

    def signalled(self, name: str) -> None:
        """Log the signal (``"SIGTERM"``) that stops the server."""
        self._log.log(
            logging.INFO,
            "distro: %s received, closing gracefully",
            name,
            extra={"event": "signal", "signal": name},
        )

    def draining(self, running: int, queued: int, timeout: float) -> None:
        """Log that closing starts with ``running`` handlers running and ``queued`` messages
        waiting (which are refused)."""
        self._log.log(
            logging.INFO,
            "distro: draining: %d handler(s) still running (waiting up to %.3gs), "
            "%d queued message(s) refused",
            running,
            timeout,
            queued,
            extra={"event": "draining", "running": running, "queued": queued},
        )

    def closed(self) -> None:
        """Log that the server closed, with its counters."""
        stats = self._stats
        self._log.log(
            logging.INFO,
            "distro: closed: %s",
            stats,
            extra={"event": "closed", "stats": attrs.asdict(stats)},
        )

    def dropped(self, reason: str, detail: str) -> None:
        """Count a frame or message dropped for ``reason`` and log ``detail``."""
        dropped = self._stats.dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        self._quiet.log(
            reason,
            logging.WARNING,
            "distro: dropped (%s): %s",
            reason,
            detail,
            extra={"event": "dropped", "reason": reason},
        )

    def handler_failed(self, entry: Entry, msg: Message, exc: Exception) -> str:
        """Count and log (rate-limited, per handler and exception type) a handler that raised
        ``exc`` on ``msg``, with ``exc`` as the record's ``exc_info``; or one cancelled at its
        deadline.

        :returns: the failure's text for an error reply: ``"ValueError: ..."``.
        """
        kind = type(exc)
        headers = msg.headers
        verb = headers.get("verb") or "GET"
        fields = {"msg_id": msg.id, "uri": headers["uri"], "verb": verb, "handler": entry.name}
        text = _text(exc)  # an exception whose __str__ raises must not escape the server
        where = (entry.name, msg.id, verb, headers["uri"])
        if kind is HandlerTimeout:
            self._stats.handler_timeouts += 1
            self._quiet.log(
                f"timeout {entry.name}",
                logging.WARNING,
                "distro: handler %s timed out on message %s (%s %s): %s",
                *where,
                exc,
                extra={"event": "handler_timeout", **fields},
            )
            return str(exc)
        if isinstance(exc, Reject):  # an expected failure: no traceback, not an error
            self._stats.rejected += 1
            self._quiet.log(
                f"reject {entry.name} {exc.code}",
                logging.INFO,
                "distro: handler %s rejected message %s (%s %s): %s",
                *where,
                text,
                extra={"event": "handler_rejected", "code": exc.code, **fields},
            )
            return text
        self._stats.handler_errors += 1
        self._quiet.log(
            f"handler {entry.name} {kind.__qualname__}",
            logging.ERROR,
            "distro: handler %s failed on message %s (%s %s): %s",
            *where,
            text,
            exc_info=exc,
            extra={"event": "handler_failed", "error": kind.__qualname__, **fields},
        )
        return text

    def cancelled(self, server: str, count: int, timeout: float) -> None:
        """Log that closing ``server`` cancelled ``count`` handlers still running after
        ``timeout`` seconds."""
        self._log.log(
            logging.WARNING,
            "distro server %s: cancelled %d handler(s) still running after %.3gs",
            server,
            count,
            timeout,
            extra={"event": "cancelled", "cancelled": count},
        )

    def internal_error(self, exc: BaseException | None) -> None:
        """Count (``dropped["internal"]``) and log (rate-limited) an error of the server's
        own, raised outside any handler."""
        dropped = self._stats.dropped
        dropped["internal"] = dropped.get("internal", 0) + 1
        self._quiet.log(
            "internal",
            logging.ERROR,
            "distro: internal error while handling: %s",
            _text(exc),
            exc_info=exc,
            extra={"event": "internal_error"},
        )


def _where(host: str, port: int) -> str:
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:  # a name, or a bus (redis://...)
        v6 = False
    return f"[{host}]:{port}" if v6 else f"{host}:{port}"


def _text(exc: BaseException | None) -> str:
    if exc is None:
        return "None"
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return f"{type(exc).__name__} (its text cannot be shown)"
