"""Logging helpers: the logger contract, structured fields, and a rate limit so floods of bad
input stay quiet.

Every line distro logs carries structured fields (``extra=``) a JSON formatter can show:
``event`` always, then ``transport``, ``msg_id``, ``uri``, ``verb``, ``peer``, ``handler``,
``reason``... where they are known. A failure's exception travels as the record's
``exc_info``, not as text in the message. Loggers that are not the standard library's and
whose ``log`` takes no keywords get the plain line, with the traceback appended.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = [
    "MAX_KEYS",
    "Log",
    "Logger",
    "RateLimitedLog",
    "Traceback",
    "check_logger",
    "default_logger",
]


class Logger(Protocol):
    """Anything with ``log(level, msg, *args)``, such as a :class:`logging.Logger`.

    One that also takes the keywords ``exc_info`` and ``extra`` (as :class:`logging.Logger`
    and :class:`logging.LoggerAdapter` do) gets them.
    """

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Log ``msg % args`` at ``level``."""


def default_logger() -> logging.Logger:
    """The ``distro`` logger of the standard library."""
    return logging.getLogger("distro")


def check_logger(logger: object) -> Logger:
    """Return ``logger`` (or the default one for None) after checking it can log.

    :raises TypeError: it has no callable ``log`` method.
    """
    if logger is None:
        return default_logger()
    if not callable(getattr(logger, "log", None)):
        raise TypeError(
            f"logger must have a log(level, msg, *args) method, like logging.Logger; "
            f"got {type(logger).__name__}"
        )
    return logger  # type: ignore[return-value]


def _takes_keywords(logger: Logger) -> bool:
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        return True
    try:
        params = inspect.signature(logger.log).parameters.values()
    except (TypeError, ValueError):
        return False
    names = {p.name for p in params}
    return any(p.kind is p.VAR_KEYWORD for p in params) or {"exc_info", "extra"} <= names


class Log:
    """A :class:`Logger` and how to give it structured fields: the one place distro's lines
    go through.

    :param logger: the user's logger.
    :param fields: fields every line of this log carries (``transport``, say).
    """

    __slots__ = ("_fields", "_keywords", "logger")

    def __init__(self, logger: Logger, **fields: Any) -> None:
        self.logger = logger
        self._keywords = _takes_keywords(logger)
        self._fields = fields

    def log(
        self,
        level: int,
        msg: str,
        *args: Any,
        exc_info: BaseException | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Log ``msg % args`` with the structured fields ``extra`` (on top of this log's own)
        and ``exc_info``, the exception whose traceback goes with the line."""
        if self._keywords:
            fields = {**self._fields, **extra} if extra else self._fields
            self.logger.log(level, msg, *args, exc_info=exc_info, extra=fields)  # type: ignore[call-arg]
        elif exc_info is not None:
            self.logger.log(level, f"{msg}\n%s", *args, Traceback(exc_info))
        else:
            self.logger.log(level, msg, *args)


MAX_KEYS = 1024
"""Keys a :class:`RateLimitedLog` remembers; past it the oldest is forgotten (its next line
is logged as if it were new), so that keys made from what peers send cannot grow it."""


class RateLimitedLog:
    """Logs at most ``burst`` lines per ``interval`` seconds for each key; counts the rest.

    When a key's quiet period ends, the next line says how many were suppressed (in its text,
    and as the structured field ``suppressed``).

    :param logger: a :class:`Logger`, or a :class:`Log` (with its fields).
    """

    __slots__ = ("_burst", "_interval", "_log", "_state")

    def __init__(self, logger: Logger | Log, burst: int = 5, interval: float = 10.0) -> None:
        self._log = logger if isinstance(logger, Log) else Log(logger)
        self._burst = burst
        self._interval = interval
        self._state: dict[str, list[float]] = {}  # key -> [window start, lines, suppressed]

    def log(
        self,
        key: str,
        level: int,
        msg: str,
        *args: Any,
        exc_info: BaseException | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Log ``msg % args`` (see :meth:`Log.log`) unless ``key`` has used up its lines for
        this interval."""
        now = time.monotonic()
        state = self._state.get(key)
        suppressed = 0
        if state is None or now - state[0] >= self._interval:
            suppressed = int(state[2]) if state is not None else 0
            if state is None and len(self._state) >= MAX_KEYS:
                del self._state[next(iter(self._state))]
            self._state[key] = state = [now, 0, 0]
            if suppressed:
                msg = f"{msg} (and {suppressed} more like it suppressed)"
        if state[1] < self._burst:
            state[1] += 1
            fields = {"event": key, **(extra or {}), "suppressed": suppressed}
            self._log.log(level, msg, *args, exc_info=exc_info, extra=fields)
        else:
            state[2] += 1


class Traceback:
    """An exception's traceback, formatted only if the line is logged."""

    __slots__ = ("_exc",)

    def __init__(self, exc: BaseException | None) -> None:
        self._exc = exc

    def __str__(self) -> str:
        if self._exc is None:
            return "None"
        try:
            return "".join(traceback.format_exception(self._exc)).rstrip()
        except Exception:
            return f"{type(self._exc).__name__} (its traceback cannot be shown)"
