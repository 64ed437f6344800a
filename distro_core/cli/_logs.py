"""How the command line logs: a text or a JSON line per record on standard error."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["LEVELS", "JsonFormatter", "configure"]

LEVELS = ("debug", "info", "warning", "error", "critical")
"""The names ``--log-level`` takes."""

_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the record's
    structured fields (its ``extra``), and for a record with an exception ``exc_type``,
    ``exc_message`` and ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, item in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = item
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__qualname__
            out["exc_message"] = str(record.exc_info[1])
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Send every logger's records at ``level`` or above to standard error, as ``fmt``
    (``text`` or ``json``) lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
