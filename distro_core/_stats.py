"""What a server counts (:class:`ServerStats`, read as ``server.stats``) and the log lines that
go with the counts (:class:`ServerLog`)."""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING

import attrs

from ._logging import Logger, RateLimitedLog

if TYPE_CHECKING:
    from ._handlers import Entry
    from ._message import Message

__all__ = ["ServerLog", "ServerStats"]


@attrs.define
class ServerStats:
    """Counters of what a server has seen since it started.

    :ivar received: frames taken from the transport.
    :ivar handled: messages dispatched to at least one handler and finished.
    :ivar dropped: frames or messages dropped, by reason (``invalid``, ``no_route``,
        ``overload``, ``closing``, ``too_large``, ``truncated``, ``ack_refused``,
        ``ack_failed``, ...).
    :ivar handler_errors: handler calls that raised.
    :ivar replies_sent: replies (and error replies) sent to requests.
    :ivar acks_sent: RECEIVED acknowledgements sent.
    """

    received: int = 0
    handled: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)
    handler_errors: int = 0
    replies_sent: int = 0
    acks_sent: int = 0

    @property
    def dropped_total(self) -> int:
        """All dropped frames and messages, whatever the reason."""
        return sum(self.dropped.values())


class ServerLog:
    """What goes wrong for a server, counted in its :class:`ServerStats` and logged: dropped
    frames (rate-limited: a flood of bad frames must not flood the log too), failed handlers,
    handlers cancelled at close and the server's own errors.

    :param stats: the server's counters.
    :param logger: the server's logger.
    """

    __slots__ = ("_logger", "_quiet", "_stats")

    def __init__(self, stats: ServerStats, logger: Logger) -> None:
        self._stats = stats
        self._logger = logger
        self._quiet = RateLimitedLog(logger)

    def dropped(self, reason: str, detail: str) -> None:
        """Count a frame or message dropped for ``reason`` and log ``detail``."""
        dropped = self._stats.dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        self._quiet.log(reason, logging.WARNING, "distro: dropped (%s): %s", reason, detail)

    def handler_failed(self, entry: Entry, msg: Message, exc: Exception) -> str:
        """Count and log a handler that raised ``exc`` on ``msg``, with its traceback.

        :returns: the failure's text for an error reply: ``"ValueError: ..."``.
        """
        self._stats.handler_errors += 1
        self._logger.log(
            logging.ERROR,
            "distro: handler %s failed on message %s (%s %s): %s",
            entry.name,
            msg.id,
            msg.headers.get("verb") or "GET",
            msg.headers["uri"],
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        return f"{type(exc).__name__}: {exc}"

    def cancelled(self, server: str, count: int, timeout: float) -> None:
        """Log that closing ``server`` cancelled ``count`` handlers still running after
        ``timeout`` seconds."""
        self._logger.log(
            logging.WARNING,
            "distro server %s: cancelled %d handler(s) still running after %.3gs",
            server,
            count,
            timeout,
        )

    def internal_error(self, exc: BaseException | None) -> None:
        """Log an error of the server's own, raised outside any handler."""
        self._logger.log(logging.ERROR, "distro: internal error while handling: %r", exc)
