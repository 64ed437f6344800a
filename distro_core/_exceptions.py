"""The exceptions distro raises, all rooted at :class:`DistroError`.

Each class also inherits the builtin it refines, so ``except ValueError`` or
``except TimeoutError`` keeps working for code that does not know distro::

    DistroError (Exception)
    ├── MessageError (ValueError)            a message that cannot be made, encoded or parsed
    │   └── MessageTooLarge                  bigger than the transport can carry in one frame
    ├── RouteError (ValueError)              a route pattern that cannot be registered
    ├── TransportNotFound (LookupError)      create("name") with no such transport installed
    ├── PluginError (TypeError)              a plugin that breaks the transport contract
    │   └── DuplicateTransport               two distributions claim one transport name
    ├── TransportError (OSError)             a transport could not do its I/O
    │   ├── AddressInUse                     a server could not bind its address
    │   └── ConnectionError (ConnectionError) the peer is unreachable or the link broke
    ├── RequestTimeout (TimeoutError)        no reply in time
    ├── RemoteError                          the remote handler raised, or no handler matched
    └── StateError (RuntimeError)            a server or client used in the wrong lifecycle state

Lower-layer errors (``OSError``, ``redis.*``, ``zmq.*``) are raised as the most specific class
here with ``raise ... from exc``, so the cause stays visible in the traceback.
"""

from __future__ import annotations

import builtins

__all__ = [
    "AddressInUse",
    "ConnectionError",
    "DistroError",
    "DuplicateTransport",
    "MessageError",
    "MessageTooLarge",
    "PluginError",
    "RemoteError",
    "RequestTimeout",
    "RouteError",
    "StateError",
    "TransportError",
    "TransportNotFound",
]


class DistroError(Exception):
    """Root of every error distro raises on purpose."""


class MessageError(DistroError, ValueError):
    """A message could not be made, encoded or parsed; the text says what and where."""


class MessageTooLarge(MessageError):
    """A message is larger than its transport can carry in one frame.

    :ivar size: the encoded size in bytes.
    :ivar limit: the transport's limit in bytes.
    """

    def __init__(self, size: int, limit: int, transport: str = "") -> None:
        where = f" over {transport}" if transport else ""
        super().__init__(f"message is {size} bytes encoded; the limit{where} is {limit} bytes")
        self.size = size
        self.limit = limit
        self.transport = transport


class RouteError(DistroError, ValueError):
    """A route pattern is malformed (for example a brace that is not a whole segment)."""


class TransportNotFound(DistroError, LookupError):
    """No transport of that name is registered or installed.

    :ivar name: the name asked for.
    :ivar available: the names that are available.
    """

    def __init__(self, name: str, available: list[str]) -> None:
        hint = ", ".join(sorted(available)) or "none"
        super().__init__(
            f"no transport named {name!r}; available: {hint}. "
            f"If it is a plugin, install it first (for example: pip install distro-{name})"
        )
        self.name = name
        self.available = sorted(available)


class PluginError(DistroError, TypeError):
    """A plugin or transport object does not honour the transport contract."""


class DuplicateTransport(PluginError):
    """Two plugins register the same transport name."""


class TransportError(DistroError, OSError):
    """A transport failed to do its I/O; ``__cause__`` holds the lower-layer error."""


class AddressInUse(TransportError):
    """A server could not bind because its address is taken."""


class ConnectionError(TransportError, builtins.ConnectionError):
    """The peer cannot be reached, or the link to it broke."""


class RequestTimeout(DistroError, TimeoutError):
    """No reply arrived within the time-out.

    :ivar message_id: the id of the request that timed out.
    """

    def __init__(self, message_id: str, timeout: float) -> None:
        super().__init__(f"no reply to request {message_id} within {timeout:g}s")
        self.message_id = message_id
        self.timeout = timeout


class RemoteError(DistroError):
    """The server answered a request with an error.

    :ivar message_id: the id of the request.
    :ivar remote: the error text the server sent.
    :ivar code: why, as a stable token from the reply's ``code`` header (docs/wire-format.md):
        ``"no_handler"``, ``"handler_error"``, ``"handler_timeout"``, ``"not_serializable"``,
        ``"too_large"``, ``"overloaded"`` (the server shed the request at once: try again
        later, or elsewhere), ``"expired"``; None when the reply carries no code (a server
        older than codes, or the JavaScript original).
    """

    def __init__(self, message_id: str, remote: str, code: str | None = None) -> None:
        super().__init__(f"request {message_id} failed remotely: {remote}")
        self.message_id = message_id
        self.remote = remote
        self.code = code


class StateError(DistroError, RuntimeError):
    """A server or client was used before it was opened or after it was closed."""
