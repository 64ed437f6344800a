"""The ``zmq`` transport: ROUTER servers, DEALER clients, over tcp:// or ipc://."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import zmq

import distro_core as distro
from distro_core import transport as kit

from ._connection import ZmqConnection
from ._context import context_for
from ._curve import CURVE_OVERHEAD, Admission, admit, configure_client
from ._errors import UNREACHABLE
from ._link import EVENTS
from ._listener import ZmqListener
from ._options import (
    DEFAULT_MAX_MESSAGE_SIZE,
    ZmqOptions,
    address_of,
    client_endpoint,
    needs_ipv6,
    read_options,
    server_endpoint,
)

__all__ = ["ZmqTransport"]


class ZmqTransport(kit.Transport):
    """Brokerless ZeroMQ transport: a server binds a ROUTER socket, clients connect DEALERs.

    Options (all optional except a client's port or endpoint):

    * ``address``: the host (default ``"127.0.0.1"``). A server binds that interface (``"*"``:
      every one); a client connects to it. An ``ipc://`` endpoint is accepted here too, so a
      client can be given an ipc server's ``address`` as it reports it.
    * ``port``: the tcp port; 0 (the default) on a server picks a free one, which
      ``server.address`` then reports.
    * ``endpoint``: a whole ZeroMQ endpoint, ``"tcp://host:port"`` or ``"ipc:///path"``, instead
      of ``address`` and ``port``. An ipc server reports ``(endpoint, 0)`` as its address.
    * ``max_message_size``: the largest encoded message in bytes (default 1 MiB). A server
      makes ZeroMQ refuse bigger frames (the connection that sent one is dropped).
    * ``hwm``: the high-water mark of every socket, in messages, both ways (default 1000).
    * ``send_timeout``: seconds a client send waits while its queue is full (default 5);
      then it raises ``ConnectionError``.
    * ``connect_timeout``: seconds a client's open waits for the server (default 5): ZeroMQ
      keeps trying meanwhile, so a client may start before its server.
    * ``linger``: seconds a closed socket keeps trying to deliver queued frames, 0..10
      (default 1); closing never blocks.
    * ``context``: a ``zmq.Context`` to use instead of the process-wide one.
    * ``curve_secret_key`` (server): the server's CURVE secret key (Z85 text, as
      ``zmq.curve_keypair()`` makes): the server then speaks only CURVE (encrypted,
      authenticated), and gives out its public key. On a client: the client's own secret key
      (its public key is derived from it); without it a client makes a fresh keypair.
    * ``curve_server_key`` (client): the server's CURVE public key; makes the client speak
      CURVE. A client with the wrong key cannot connect (``open`` times out).
    * ``curve_clients`` (server): the client public keys let in; others are refused, counted
      ``curve_auth`` and logged. Without it any client that knows the server's public key
      may connect. A handler reads the client's public key as ``msg.peer_identity``.

    Made by :meth:`from_options`; ``ZmqTransport(settings)`` takes options already checked.

    :param settings: the checked options.
    :param options: the options as the user gave them (for :meth:`describe` and logs).
    """

    name: ClassVar[str] = "zmq"
    capabilities = kit.Capabilities(
        ordered=True,
        reliable=True,
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
        request_reply=True,
        acknowledgements=True,
        fan_out=False,
        cross_process=True,
    )
    # The literal contract version this plugin was written for (not kit.API_VERSION), so a
    # core with another contract refuses it at load instead of running it unchecked.
    api_version: ClassVar[int] = 2

    def __init__(self, settings: ZmqOptions, *, options: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        if options is not None:
            self.options = options
        if settings.max_message_size != DEFAULT_MAX_MESSAGE_SIZE:
            # The class attribute states the default; an instance with another limit says so.
            self.capabilities = attrs.evolve(
                self.capabilities, max_message_size=settings.max_message_size
            )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ZmqTransport:
        """Read the options listed in the class docstring.

        :raises TypeError: an unknown option, or a ``context`` that is not a ``zmq.Context``.
        :raises ValueError: an option with a bad value.
        """
        opts = kit.Options(cls.name, options)
        settings = read_options(opts)
        context = settings.context
        if context is not None and not isinstance(context, zmq.Context):
            raise TypeError(
                f"zmq option 'context' must be a zmq.Context, got {type(context).__name__}"
            )
        if settings.curve is not None and not zmq.has("curve"):
            raise ValueError("zmq CURVE options given, but this libzmq was built without CURVE")
        return cls(settings, options=opts.finish())

    def describe(self) -> str:
        """The transport and the endpoint it binds or connects to."""
        opts = self.settings
        if opts.endpoint is not None:
            return f"zmq({opts.endpoint})"
        return f"zmq(address={opts.address!r}, port={opts.port})"

    def _socket(self, kind: int, endpoint: str) -> zmq.Socket[bytes]:
        opts = self.settings
        try:
            sock = context_for(opts.context).socket(kind)
        except zmq.ZMQError as exc:
            raise kit.map_error(
                exc, f"zmq: making a socket for {endpoint}", unreachable=UNREACHABLE
            ) from exc
        try:
            sock.setsockopt(zmq.LINGER, opts.linger_ms)
            sock.setsockopt(zmq.SNDHWM, opts.hwm)
            sock.setsockopt(zmq.RCVHWM, opts.hwm)
            if needs_ipv6(endpoint):
                sock.setsockopt(zmq.IPV6, 1)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise kit.map_error(
                exc, f"zmq: setting up a socket for {endpoint}", unreachable=UNREACHABLE
            ) from exc
        return sock

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        """Bind a ROUTER socket and start handing frames to ``receiver``.

        :raises distro.AddressInUse: the address and port are taken.
        :raises distro.TransportError: binding failed otherwise (a bad interface or path).
        """
        endpoint = server_endpoint(self.settings)
        if endpoint.startswith("ipc://") and _ipc_listener_alive(endpoint[len("ipc://") :]):
            # libzmq would unlink the live server's socket file and take the path over.
            raise distro.AddressInUse(f"zmq: binding {endpoint}: another server listens there")
        sock = self._socket(zmq.ROUTER, endpoint)
        admission: Admission | None = None
        try:
            if self.settings.curve is not None:
                context = context_for(self.settings.context)
                keep = self.settings.context is None  # the process-wide context lives on
                admission = await admit(
                    context, sock, self.settings.curve, receiver, endpoint, keep
                )
            # A reply to a peer that has gone raises instead of vanishing, so the core counts it.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # Frames over the limit are refused by ZeroMQ before they are buffered.
            # Over CURVE libzmq checks the encrypted frame, which is a MESSAGE command holding a
            # nonce and a MAC besides the frame (CURVE_OVERHEAD bytes).
            overhead = CURVE_OVERHEAD if admission is not None else 0
            sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_size + overhead)
            sock.bind(endpoint)
            bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            if admission is not None:
                admission.endpoint = bound
        except BaseException as exc:
            sock.close(linger=0)
            if admission is not None:
                admission.close()
            if not isinstance(exc, zmq.ZMQError):
                raise
            opts = self.settings
            where = (
                f"binding {endpoint}"
                if opts.endpoint is not None or opts.address.startswith("ipc://")
                else f"binding {endpoint} (address {opts.address}, port {opts.port})"
            )
            raise kit.map_error(exc, f"zmq: {where}", unreachable=UNREACHABLE) from exc
        try:
            return ZmqListener(
                sock, receiver, bound, address_of(bound), self.settings.linger_ms, admission
            )
        except BaseException:
            sock.close(linger=0)
            if admission is not None:
                admission.close()
            raise

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        """Connect a DEALER socket to the server (or to ``target``, for acknowledgements)
        and wait until the link is up: ZeroMQ retries in the background while nothing listens
        yet, for at most ``connect_timeout`` seconds.

        :raises ValueError: no server is named (no port, no endpoint).
        :raises distro.ConnectionError: no server answered within ``connect_timeout``.
        :raises distro.TransportError: the endpoint cannot be used (a bad host or path).
        """
        try:
            endpoint = client_endpoint(self.settings, target)
        except ValueError as exc:
            if target is None:
                raise
            # A target comes from a message header, not from the user: a link error, not a bug.
            raise distro.ConnectionError(f"zmq: cannot connect to {target!r}: {exc}") from exc
        sock = self._socket(zmq.DEALER, endpoint)
        curve = self.settings.curve
        if curve is not None:
            try:
                configure_client(sock, curve, endpoint)
            except ValueError as exc:
                sock.close(linger=0)
                if target is None:
                    raise
                # A RECEIVED for another server: this server's options name no server key.
                raise distro.ConnectionError(str(exc)) from exc
        monitor: zmq.Socket[bytes] | None = None
        try:
            # Before connect(), so that no event of the first attempt is missed.
            monitor = sock.get_monitor_socket(EVENTS)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            if monitor is not None:
                sock.disable_monitor()
                monitor.close(linger=0)
            sock.close(linger=0)
            raise kit.map_error(
                exc, f"zmq: connecting to {endpoint}", unreachable=UNREACHABLE
            ) from exc
        opts = self.settings
        try:
            connection = ZmqConnection(
                sock, monitor, receiver, endpoint, opts.send_timeout, opts.linger_ms
            )
        except BaseException:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            raise
        try:
            await connection.open(opts.connect_timeout)
        except BaseException:
            await connection.aclose()  # idempotent: a time-out has closed it already
            raise
        return connection


def _ipc_listener_alive(path: str) -> bool:
    """Whether a server accepts connections on the Unix socket ``path`` right now."""
    if not hasattr(socket, "AF_UNIX") or path in ("*", "") or path.startswith("@"):
        return False  # a wildcard or abstract name: libzmq does not unlink those
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True
