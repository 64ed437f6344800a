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
    ├── Reject                               raised by a handler: the error its caller gets
    ├── InvalidPayload (ValueError)          a typed handler's payload does not validate
    └── StateError (RuntimeError)            a server or client used in the wrong lifecycle state

Lower-layer errors (``OSError``, ``redis.*``, ``zmq.*``) are raised as the most specific class
here with ``raise ... from exc``, so the cause stays visible in the traceback.
"""

from __future__ import annotations

import builtins

from ._codec import CodecError, dumps, loads

__all__ = [
    "AddressInUse",
    "ConnectionError",
    "DistroError",
    "DuplicateTransport",
    "InvalidPayload",
    "MessageError",
    "MessageTooLarge",
    "PluginError",
    "Reject",
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
    """The server answered a request with an error (docs/wire-format.md, "Errors").

    A handler that calls another service and lets its RemoteError propagate (or re-raises it)
    passes it on as it is: its caller gets the same ``code``, ``remote`` and ``details``, not
    one more layer of text.

    :ivar message_id: the id of the request.
    :ivar remote: the error's message, as the server sent it (also :attr:`message`).
    :ivar code: why, as a stable token from the reply's ``code`` header: distro's own
        (``"no_handler"``, ``"handler_error"``, ``"handler_timeout"``, ``"invalid_payload"``,
        ``"not_serializable"``, ``"too_large"``, ``"overloaded"``: the server shed the request
        at once, try again later or elsewhere; ``"expired"``, ``"closing"``) or the one a
        handler gave :class:`Reject`; None when the reply carries no code (a server older
        than codes, or the JavaScript original).
    :ivar details: the error's details (any JSON value: what a :class:`Reject` carried,
        the fields that failed to validate...), or None.
    """

    def __init__(
        self, message_id: str, remote: str, code: str | None = None, details: object = None
    ) -> None:
        super().__init__(f"request {message_id} failed remotely: {remote}")
        self.message_id = message_id
        self.remote = remote
        self.code = code
        self.details = details

    @property
    def message(self) -> str:
        """The error's message: the same as :attr:`remote`."""
        return self.remote


class Reject(DistroError):
    """Raised by a handler for an expected failure: the caller's :class:`RemoteError` gets
    this ``code``, ``message`` and ``details`` as they are (an unexpected exception reaches
    the caller only as an "internal error"; see :class:`~distro_core.Server`'s
    ``expose_errors``).

    Any code names the failure for the caller's programs (``"out_of_stock"``); distro's own
    codes (``"no_handler"``, ``"overloaded"``, ``"closing"``...) mean what
    docs/wire-format.md says, so reuse one only with that meaning (a confirmed send is sent
    again after ``overloaded`` or ``closing``).

    :param code: a stable, non-empty token.
    :param message: the text for people.
    :param details: any JSON value, or None.
    :raises TypeError: ``code`` or ``message`` is not text.
    :raises ValueError: ``code`` is empty, or ``details`` is not a JSON value.
    """

    def __init__(self, code: str, message: str, details: object = None) -> None:
        if type(code) is not str or type(message) is not str:
            raise TypeError(f"Reject takes a code and a message as text, got {code!r}, {message!r}")
        if not code:
            raise ValueError("a Reject's code must not be empty")
        if details is not None:
            try:
                same = loads(dumps(details)) == details
            except (CodecError, RecursionError):
                same = False
            if not same:
                raise ValueError(f"a Reject's details must be a JSON value, got {details!r:.60}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


class InvalidPayload(DistroError, ValueError):
    """A typed handler's payload does not validate as its annotated type: the handler does
    not run, the server counts it (``stats.dropped["invalid_payload"]``) and a request gets
    an error reply with the code ``invalid_payload``.

    :ivar errors: ``(field, problem)`` pairs, the field as a path (``"items[0].qty"``;
        ``""`` for the payload itself).
    :ivar type_name: the name of the type it had to be.
    """

    def __init__(self, type_name: str, errors: list[tuple[str, str]]) -> None:
        said = "; ".join(f"{field or 'payload'}: {problem}" for field, problem in errors)
        super().__init__(f"the payload is not a valid {type_name}: {said}")
        self.type_name = type_name
        self.errors = errors


class StateError(DistroError, RuntimeError):
    """A server or client was used before it was opened or after it was closed."""
