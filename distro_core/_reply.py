"""A handler's reply with headers of its own (:class:`Reply`). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RESERVED", "Reply"]

RESERVED = frozenset(
    {
        "uri",
        "verb",
        "inReplyTo",
        "error",
        "code",
        "errorDetails",
        "replyTo",
        "replyWithin",
        "confirm",
        "address",
        "port",
    }
)
"""The headers the protocol defines (docs/wire-format.md): a :class:`Reply` cannot set them."""


class Reply:
    """What a handler returns to answer a request with headers of its own: the reply message
    carries ``payload`` and, besides ``uri`` and ``inReplyTo``, ``headers``.

    ::

        @server.get("/report/{id}")
        def report(msg):
            return distro.Reply({"rows": 3}, headers={"cache": "60s"})

    The headers the protocol defines (:data:`RESERVED`: ``uri``, ``inReplyTo``, ``error``,
    ``code``...) are refused, so a reply cannot pass for an error reply or another message.
    Headers and payload must be JSON values: a Reply that is not one is answered with the
    error code ``not_serializable``, as any other such return value.

    :param payload: the reply's payload (a JSON value).
    :param headers: extra headers, each a JSON value.
    :raises TypeError: ``headers`` is not a mapping with string keys.
    :raises ValueError: ``headers`` holds a reserved name.
    """

    __slots__ = ("headers", "payload")

    def __init__(self, payload: Any = None, headers: Mapping[str, Any] | None = None) -> None:
        own: dict[str, Any] = {}
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise TypeError(f"Reply headers must be a mapping, got {type(headers).__name__}")
            own = dict(headers)
            for key in own:
                if type(key) is not str:
                    raise TypeError(f"Reply header names must be strings, got {key!r}")
            clash = sorted(RESERVED.intersection(own))
            if clash:
                raise ValueError(
                    f"a Reply cannot set the protocol's header(s) {', '.join(clash)} "
                    f"(reserved: {', '.join(sorted(RESERVED))})"
                )
        self.payload = payload
        """The reply's payload."""
        self.headers = own
        """The reply's own headers (a copy of those given)."""

    def __repr__(self) -> str:
        return f"Reply({self.payload!r}, headers={self.headers!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Reply:
            return NotImplemented
        return (self.payload, self.headers) == (other.payload, other.headers)

    __hash__ = None  # type: ignore[assignment]
