"""Logging helpers: the logger contract and a rate limit so floods of bad input stay quiet."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

__all__ = ["MAX_KEYS", "Logger", "RateLimitedLog", "check_logger", "default_logger"]


class Logger(Protocol):
    """Anything with ``log(level, msg, *args)``, such as a :class:`logging.Logger`."""

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


MAX_KEYS = 1024
"""Keys a :class:`RateLimitedLog` remembers; past it the oldest is forgotten (its next line
is logged as if it were new), so that keys made from what peers send cannot grow it."""


class RateLimitedLog:
    """Logs at most ``burst`` lines per ``interval`` seconds for each key; counts the rest.

    When a key's quiet period ends, the next line says how many were suppressed.
    """

    __slots__ = ("_burst", "_interval", "_logger", "_state")

    def __init__(self, logger: Logger, burst: int = 5, interval: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval
        self._state: dict[str, list[float]] = {}  # key -> [window start, lines, suppressed]

    def log(self, key: str, level: int, msg: str, *args: Any) -> None:
        """Log ``msg % args`` unless ``key`` has used up its lines for this interval."""
        now = time.monotonic()
        state = self._state.get(key)
        if state is None or now - state[0] >= self._interval:
            suppressed = int(state[2]) if state is not None else 0
            if state is None and len(self._state) >= MAX_KEYS:
                del self._state[next(iter(self._state))]
            self._state[key] = state = [now, 0, 0]
            if suppressed:
                msg = f"{msg} (and {suppressed} more like it suppressed)"
        if state[1] < self._burst:
            state[1] += 1
            self._logger.log(level, msg, *args)
        else:
            state[2] += 1
