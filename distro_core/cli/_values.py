"""Reading the command line's values: ``key=value`` options and headers, JSON payloads.

Pure code: no click, no I/O beyond reading a payload file or standard input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["UsageProblem", "key_values", "payload", "value"]


class UsageProblem(ValueError):
    """A value on the command line that cannot be used; its text names it."""


def value(text: str) -> Any:
    """``text`` as JSON when it parses (``8001``, ``true``, ``null``, ``[1, 2]``,
    ``"8001"``), else the text itself (``127.0.0.1``, ``shop:``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def key_values(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``["port=8001", "prefix=shop:"]`` as ``{"port": 8001, "prefix": "shop:"}``.

    :param what: the option's name for errors (``--option``).
    :raises UsageProblem: an item without ``=`` or with an empty key, or a key given twice.
    """
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageProblem(f"{what} {pair!r}: write it as key=value")
        if key in found:
            raise UsageProblem(f"{what} {key!r} is given twice")
        found[key] = value(text)
    return found


def payload(text: str | None) -> Any:
    """The payload ``--payload`` names: JSON text, ``@path`` (a file's JSON) or ``-`` (standard
    input's JSON); None when not given.

    :raises UsageProblem: the JSON is invalid (the text says where), or the file cannot be read.
    """
    if text is None:
        return None
    where = "--payload"
    if text == "-":
        where, text = "--payload - (standard input)", sys.stdin.read()
    elif text.startswith("@"):
        path = Path(text[1:])
        where = f"--payload {text}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageProblem(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(character {exc.pos})"
        ) from exc
