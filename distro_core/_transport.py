"""The transport contract, version 2: what a transport implements so the core can run over it.

A transport moves bytes, nothing else. The core encodes and parses messages, routes them, calls
handlers, correlates requests with replies, builds every reply and error, and sends RECEIVED
acknowledgements; every transport gets those for free. A transport provides three small objects:

* :class:`Transport`: made once per server or client by :meth:`Transport.from_options` from the
  user's options; it opens listeners and connections.
* :class:`Listener` (server side): reads frames and hands each to the core's
  :class:`Receiver` together with a :class:`Peer`, the path back to the sender.
* :class:`Connection` (client side): sends frames to a server (:meth:`Connection.send` one way,
  :meth:`Connection.request` for a request) and hands each frame that comes back (replies) to
  the core's :class:`ClientReceiver`, or tells it that a request cannot be answered.

Rules every transport follows:

* One frame is one message's wire form (``bytes``). Never hand the core a partial frame; a
  stream transport splits its byte stream into frames first (see ``distro_core.framing``).
* Callbacks into the core (``frame_received``, ``frame_dropped``, ``connection_lost``,
  ``request_failed``) are made from the event loop that opened the listener or connection, and
  never block.
* Lower-layer errors (``OSError`` and library exceptions) are raised as
  :class:`~distro_core.TransportError` subclasses with ``from exc``
  (:func:`distro_core.transport.map_error` does the mapping).
* ``aclose`` is idempotent and bounded in time.
* A peer whose :attr:`Peer.settles` is true is told how each frame it delivered ended, exactly
  once (:meth:`Peer.settle`): the hook a transport with acknowledgement and redelivery needs.

A transport states what it cannot do in :attr:`Transport.capabilities`; the core and the
conformance kit (``distro_core.testing``) adapt to it. What changed from version 1 is listed in
docs/plugins.md ("Contract version 2").
"""

from __future__ import annotations

import abc
import enum
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import attrs

if TYPE_CHECKING:
    from ._message import Message

__all__ = [
    "API_VERSION",
    "Capabilities",
    "ClientReceiver",
    "Connection",
    "DeadLetter",
    "Listener",
    "Outcome",
    "Peer",
    "Receiver",
    "RequestFailure",
    "RouteInfo",
    "Segment",
    "Transport",
]

API_VERSION = 2
"""The version of this contract. A transport that declares another version is refused at load
with a message saying what to change (see docs/plugins.md, "Contract version 2")."""


@attrs.frozen
class Capabilities:
    """What a transport can and cannot do; the defaults describe a reliable stream.

    :ivar ordered: messages sent on one client arrive in the order sent.
    :ivar reliable: a message sent while the server is up is not lost (false for UDP).
    :ivar max_message_size: the largest encoded message one frame carries, or None.
    :ivar request_reply: servers can answer requests.
    :ivar acknowledgements: servers can send RECEIVED to an ``address``/``port`` header.
    :ivar fan_out: every server whose routes match receives a message (pub/sub), not just one.
    :ivar cross_process: clients in other processes can reach a server (false for ``memory``).
    :ivar groups: servers made with the same ``group=`` name share the messages of their
        routes: each message goes to one member (competing consumers). The transport reads
        the ``group`` option; the core refuses ``group=`` on a transport without this flag.
    :ivar redelivery: a message whose handler raised is delivered again (to any member) and,
        after a bounded number of deliveries, kept as a dead letter; the transport's peers
        settle (:attr:`Peer.settles`).
    :ivar durable: a message sent while no server (of its group) runs is kept by the broker
        and handled when one starts.
    """

    ordered: bool = True
    reliable: bool = True
    max_message_size: int | None = None
    request_reply: bool = True
    acknowledgements: bool = True
    fan_out: bool = False
    cross_process: bool = True
    groups: bool = False
    redelivery: bool = False
    durable: bool = False


class Outcome(enum.Enum):
    """How the core finished with one delivered frame (see :meth:`Peer.settle`)."""

    HANDLED = "handled"
    """Every handler ran and returned (a request's reply, if any, was sent or queued):
    acknowledge it."""
    FAILED = "failed"
    """At least one handler raised (or timed out): a transport with redelivery offers it
    again after a delay and, after its limit, keeps it as a dead letter with the error."""
    DROPPED = "dropped"
    """It can never be handled: not a message, no handler for it, or expired. Acknowledge it
    (counted in ``server.stats.dropped``); redelivering it would only fail again."""
    RETURNED = "returned"
    """This server did not take it (closing, overloaded): a transport with redelivery offers
    it again, to this or another member, without counting a failed delivery."""


class RequestFailure(enum.Enum):
    """Why a connection knows a request will get no reply (see
    :meth:`ClientReceiver.request_failed`)."""

    NO_RECEIVER = "no_receiver"
    """Nothing received it: no server subscribes to its channel or subject."""
    REFUSED = "refused"
    """The broker or the path refused it."""


@attrs.frozen
class DeadLetter:
    """A message a group gave up on: every delivery failed (or no member was left to take it).

    Transports with :attr:`Capabilities.redelivery` keep these where a user can read them and
    send them again (each documents where: the memory transport on its network, Redis Streams
    in a stream).

    :ivar data: the message's frame, as it was sent.
    :ivar group: the group that could not handle it.
    :ivar error: the last failure's text.
    :ivar deliveries: how many times it was delivered.
    """

    data: bytes
    group: str
    error: str
    deliveries: int


@attrs.frozen
class Segment:
    """One segment of a route's uri pattern, as the core parsed it.

    :ivar text: a literal segment lower-cased (routing ignores case), or a parameter's name.
    :ivar param: whether the segment is a ``{name}`` parameter, matching any one non-empty
        segment.
    """

    text: str
    param: bool = False


@attrs.frozen
class RouteInfo:
    """One route a server has registered, for transports that subscribe by route (pub/sub).

    :ivar verb: the verb (upper-case).
    :ivar pattern: the uri pattern as registered, ``{name}`` segments included (for logs).
    :ivar segments: the pattern split at ``/`` and parsed: what a transport builds channel or
        subject names from. ``"/customer/{id}"`` is ``(Segment(""), Segment("customer"),
        Segment("id", param=True))``.
    """

    verb: str
    pattern: str
    segments: tuple[Segment, ...]

    @property
    def has_params(self) -> bool:
        """Whether any segment is a parameter (the route matches more than one uri)."""
        return any(s.param for s in self.segments)


class Peer(abc.ABC):
    """The sender of one frame, as the listener saw it: the path a reply takes back.

    :ivar host: the sender's source address as text (``"127.0.0.1"``, ``"::1"``), or None when
        the transport cannot tell. RECEIVED acknowledgements are only sent to this host unless
        the server allows any target.
    :cvar settles: whether the core must call :meth:`settle` for every frame handed over with
        this peer. False by default (nothing to acknowledge to a socket); a transport with
        acknowledgement and redelivery hands one settling peer per frame.
    :cvar identity: who the sender is, as the transport authenticated it (the subject of a TLS
        client certificate, a CURVE public key), or None (the default: nobody was
        authenticated). The server puts it on each message as
        :attr:`Message.peer_identity <distro_core.Message.peer_identity>`. A transport that
        authenticates peers sets it per peer (a subclass lists ``"identity"`` in its
        ``__slots__``).
    """

    __slots__ = ("host",)

    settles: ClassVar[bool] = False
    identity: str | None = None

    def __init__(self, host: str | None) -> None:
        self.host = host

    @abc.abstractmethod
    def send(self, data: bytes, reply_to: str) -> None:
        """Queue ``data`` (a reply) for the sender without blocking.

        :param reply_to: the ``replyTo`` header of the request, which the client's
            :attr:`Connection.reply_to` put there (pub/sub transports use it as the channel).
        :raises TransportError: the reply cannot be sent (the peer is gone).
        """

    def settle(  # noqa: B027 - optional, a no-op by default
        self, outcome: Outcome, detail: str | None = None
    ) -> None:
        """The core is done with the frame this peer came with: acknowledge, redeliver or
        dead-letter it. Called once per frame, only when :attr:`settles` is true; must not
        block or raise (log and count a failure instead).

        :param detail: for :attr:`Outcome.FAILED` the first failure's text (what a dead letter
            records); for :attr:`Outcome.DROPPED` and :attr:`Outcome.RETURNED` the reason it
            was counted under (``invalid``, ``no_route``, ``closing``, ``overload``...).
        """


class Receiver(Protocol):
    """What the core gives a listener (implemented by :class:`~distro_core.Server`)."""

    def frame_received(self, data: bytes, peer: Peer) -> None:
        """Take one frame; called once per frame, in arrival order."""

    def frame_dropped(self, reason: str, detail: str) -> None:
        """Note a frame the transport itself dropped (too large, cut off at EOF...).

        :param reason: a short stable token counted in ``server.stats.dropped``.
        :param detail: one line for the log (the peer, the sizes).
        """

    @property
    def routes(self) -> Sequence[RouteInfo]:
        """The server's verb routes, for transports that subscribe by route."""

    @property
    def has_catch_all(self) -> bool:
        """Whether the server has handlers that receive every message."""


class ClientReceiver(Protocol):
    """What the core gives a connection (implemented by :class:`~distro_core.Client`)."""

    def frame_received(self, data: bytes) -> None:
        """Take one frame that came back on the connection (a reply)."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The link broke (``exc``) or closed (None); pending requests fail at once."""

    def request_failed(self, request_id: str, failure: RequestFailure, detail: str) -> None:
        """The request ``request_id`` (sent with :meth:`Connection.request`) will get no reply;
        the core fails it at once with an error it builds (``detail`` is one line saying
        where, for example which bus had no subscriber). Unknown or finished ids are ignored."""

    def unheard(self, detail: str) -> None:
        """A one-way send reached no receiver, as far as the transport can tell (a pub/sub
        ``PUBLISH`` that reported no subscriber): the core counts it in the client's stats
        (``unheard``) and logs it, rate-limited. ``detail`` says where (which channel)."""


class Listener(abc.ABC):
    """A server's open endpoint.

    :ivar address: where clients reach it: ``(host, port)`` for socket transports.
    """

    address: tuple[str, int]

    def pause_reading(self) -> None:  # noqa: B027 - optional, a no-op by default
        """Stop taking in frames (back-pressure, and the first step of a graceful close)."""

    def resume_reading(self) -> None:  # noqa: B027 - optional, a no-op by default
        """Take in frames again."""

    def routes_changed(self) -> None:  # noqa: B027 - optional, a no-op by default
        """The server's routes changed (pub/sub transports resubscribe)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every socket of this listener; idempotent."""


class Connection(abc.ABC):
    """A client's link to one server.

    :ivar reply_to: what the core writes into a request's ``replyTo`` header so that the
        server's :meth:`Peer.send` can find this connection again (any string where the reply
        simply goes back on the link it came in on).
    """

    reply_to: str

    @abc.abstractmethod
    async def send(self, data: bytes, message: Message) -> None:
        """Send one frame one way; returns when it is handed to the OS or the broker, or
        queued to be written together with the other frames sent in the same event-loop
        iteration (bounded: see :class:`distro_core.transport.WriteBatcher`).

        :param data: exactly ``message.to_bytes()``.
        :param message: the message ``data`` encodes, for transports that pick a channel or
            topic from its headers; most ignore it.
        :raises TransportError: the frame could not be sent (``ConnectionError`` when the
            server is unreachable).
        """

    def send_nowait(self, data: bytes, message: Message) -> bool:
        """Optional, for speed: write one frame at once if the link takes it without waiting
        (connected, the socket not pushing back) and return True; otherwise write nothing and
        return False: the core then awaits :meth:`send` (which may wait, reconnect, raise).
        It must never block or wait. The default returns False (every frame goes through
        :meth:`send`); tcp and udp implement it, which spares a coroutine per message.

        :param data: exactly ``message.to_bytes()``.
        :raises TransportError, MessageError: as :meth:`send` would, for a frame it can never
            send.
        """
        return False

    async def request(self, data: bytes, message: Message) -> None:
        """Send one request frame: ``data`` is ``message`` with a ``replyTo`` header naming
        :attr:`reply_to`, so it is not ``message.to_bytes()``. The reply comes back through
        :meth:`ClientReceiver.frame_received`; a transport that learns no reply can come (no
        subscriber, refused) calls :meth:`ClientReceiver.request_failed` instead. By default
        the same as :meth:`send`.

        :raises TransportError: as for :meth:`send`.
        """
        await self.send(data, message)

    async def store(self, data: bytes, message: Message) -> None:
        """Durable transports (:attr:`Capabilities.durable`) may implement this: send one frame
        one way and return once the broker has stored it (a confirmed send,
        ``client.send(msg, confirm=True)``, then means "stored", whether or not a server
        runs). The core bounds it with the send's ``timeout``. Not implemented (the default), a
        confirmed send is a request the server answers once its handlers finished.

        :param data: exactly ``message.to_bytes()``.
        :raises TransportError: the broker refused it, or it could not be sent.
        """
        raise NotImplementedError

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the link; idempotent."""


_NO_OPTIONS: Mapping[str, Any] = types.MappingProxyType({})

_T = TypeVar("_T", bound="Transport")


class Transport(abc.ABC):
    """A way of moving frames between clients and servers; subclass it to add a transport.

    A subclass sets :attr:`name`, :attr:`api_version` and :attr:`capabilities`, builds itself
    from the user's options in :meth:`from_options` (with :class:`distro_core.transport.Options`,
    which raises ``TypeError`` for unknown options and ``ValueError`` for bad values), and
    implements :meth:`listen` and :meth:`connect`. One instance serves one server or client.

    :cvar name: the name ``distro.create(name)`` finds it by.
    :cvar api_version: the :data:`API_VERSION` it was written for; required (a transport that
        does not say is refused at load, so a contract change never breaks it silently).
    :cvar capabilities: what it can and cannot do; an instance may replace it when an option
        changes a limit (``self.capabilities = attrs.evolve(self.capabilities, ...)``).
    :ivar options: the options it was made from, as given (for :meth:`describe`).
    """

    name: ClassVar[str]
    api_version: ClassVar[int]
    capabilities: Capabilities = Capabilities()
    options: Mapping[str, Any] = _NO_OPTIONS

    @classmethod
    @abc.abstractmethod
    def from_options(cls: type[_T], options: Mapping[str, Any]) -> _T:
        """Make an instance from the user's options (a named constructor: ``__init__`` stays a
        plain one that takes checked values).

        :raises TypeError: an option this transport does not know (name them all).
        :raises ValueError: an option has a bad value (say which and why).
        """

    @abc.abstractmethod
    async def listen(self, receiver: Receiver) -> Listener:
        """Bind and start delivering frames to ``receiver``.

        :raises AddressInUse: the address is taken (say which address and port).
        :raises TransportError: binding failed for another reason.
        """

    @abc.abstractmethod
    async def connect(
        self, receiver: ClientReceiver, target: tuple[str, int] | None = None
    ) -> Connection:
        """Open a link to the server named by the options, or to ``target`` when given.

        ``target`` is an ``(address, port)`` pair taken from a message's headers: the core uses
        it to deliver RECEIVED acknowledgements to another server of the same transport.

        :raises ConnectionError: the server cannot be reached (for connected transports).
        """

    def describe(self) -> str:
        """A short text naming this transport and its address, for errors and logs."""
        where = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        return f"{self.name}({where})"
