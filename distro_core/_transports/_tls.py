"""TLS for the ``tcp`` transport: the options, the contexts made from them, the server's
handshake (counted when it fails), and the peer's identity.

A TLS server accepts a plain TCP connection, pauses it, and runs the handshake itself with
``loop.start_tls`` in a task (:class:`TlsListener`), instead of handing ``ssl=`` to
``create_server``: asyncio then reports a failed handshake to nobody (it logs it in debug mode
only), and a server must count and log a client refused for its certificate. A connection
whose handshake succeeded is handed to the ordinary :class:`~._tcp_server.ServerProtocol`, with
the subject of the client's certificate (if it sent one) as its peer's ``identity``.

Connections still in their handshake count against ``max_connections``; a handshake has
``connect_timeout`` seconds to finish. A failed one (no certificate when one is required, a
certificate the CA did not sign, a client that speaks no TLS, a time-out) is counted in
``server.stats.dropped["tls_handshake"]``, logged, and the connection closed; the server goes
on serving the others.

The options (read by :func:`read_tls`, see :class:`~.tcp.TcpTransport`) are the same words on
both sides, each meaning what it must for the side that uses it: ``certfile`` is a server's
certificate or a client's own; ``cafile`` is what a client checks its server against, or what
a server checks client certificates against (which turns mutual TLS on). The transport does
not know whether it will serve or connect when it is made, so both contexts are made then
(each when its options allow), and a side that lacks what it needs is refused when it starts.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any, cast

import attrs

from ..transport import Options, Receiver
from ._tcp_server import (
    CLOSE_GRACE,
    ServerLimits,
    ServerProtocol,
    TcpListener,
    loop_read_view,
    where,
)

__all__ = ["CLIENT_CERT", "TlsListener", "TlsSettings", "read_tls", "subject_of", "tls_failure"]

CLIENT_CERT = ("none", "optional", "required")
"""The values of the ``client_cert`` option: whether a TLS server asks clients for a
certificate, and whether it refuses those without one."""

_FILE_OPTIONS = ("certfile", "keyfile", "cafile", "client_cert")

# RFC 4514 short names of the attribute types Python's ``getpeercert()`` spells out.
_SHORT = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "domainComponent": "DC",
    "userId": "UID",
}


@attrs.frozen
class TlsSettings:
    """The TLS side of one tcp transport instance.

    :ivar server: the context a server handshakes with, or None when the options name no
        certificate to serve (a server is then refused when it starts).
    :ivar client: the context a client handshakes with, or None when the given context is a
        server's.
    :ivar server_hostname: the name a client checks its server's certificate against, or None
        for the address it connects to.
    """

    server: ssl.SSLContext | None
    client: ssl.SSLContext | None
    server_hostname: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """The context to serve with.

        :raises ValueError: there is none (no ``certfile``, or a client's context given).
        """
        if self.server is None:
            raise ValueError(
                "a tcp server with TLS needs its certificate: give the 'certfile' option "
                "(and 'keyfile' unless the key is in it), or tls= a server-side SSLContext "
                "(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))"
            )
        return self.server

    def client_context(self) -> ssl.SSLContext:
        """The context to connect with.

        :raises ValueError: there is none (the given context is a server's).
        """
        if self.client is None:
            raise ValueError(
                "tcp option 'tls' is a server-side SSLContext (PROTOCOL_TLS_SERVER); a client "
                "needs a client-side one (ssl.create_default_context())"
            )
        return self.client


def _path(name: str) -> Any:
    """A check for an option naming a file that must exist and be readable."""

    def check(value: Any) -> str:
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"must be a path (str or os.PathLike), got {type(value).__name__}")
        path = os.fspath(value)
        if not isinstance(path, str) or not path:
            raise ValueError(f"must be a non-empty path, got {value!r}")
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path!r}")
        if not os.access(path, os.R_OK):
            raise ValueError(f"cannot read {path!r}")
        return path

    check.__name__ = f"check_{name}"
    return check


def read_tls(opts: Options) -> TlsSettings | None:
    """Read the TLS options; None when TLS is off (no ``tls`` and no file option given).

    :raises TypeError: ``tls`` is neither an ``ssl.SSLContext`` nor a bool, or a file option
        is not a path.
    :raises ValueError: a file that is missing, unreadable or not a certificate/key in PEM;
        a key that does not match its certificate; ``tls`` given as a context together with
        the file options; ``tls=False`` together with them; a bad ``client_cert``;
        ``server_hostname`` empty, or given while TLS is off.
    """
    given = opts.get("tls", None)
    if given is not None and not isinstance(given, (ssl.SSLContext, bool)):
        raise TypeError(
            f"tcp option 'tls' must be an ssl.SSLContext or True/False, got {type(given).__name__}"
        )
    files = [name for name in _FILE_OPTIONS if name in opts]
    hostname = opts.optional_string("server_hostname")
    if hostname == "":
        raise ValueError("tcp option 'server_hostname' must be a non-empty string, got ''")
    if isinstance(given, ssl.SSLContext):
        if files:
            raise ValueError(
                f"tcp option 'tls' is an SSLContext: it already says everything that "
                f"{', '.join(files)} would; configure the context instead"
            )
        opts.get("certfile", None)  # marked as read (they are absent)
        opts.get("keyfile", None)
        opts.get("cafile", None)
        opts.get("client_cert", None)
        serves = given.protocol != ssl.PROTOCOL_TLS_CLIENT
        connects = given.protocol != ssl.PROTOCOL_TLS_SERVER
        return TlsSettings(given if serves else None, given if connects else None, hostname)
    if given is False and files:
        raise ValueError(f"tcp option tls=False turns TLS off, but {', '.join(files)} given")
    certfile: str | None = opts.get("certfile", None, _path("certfile"))
    keyfile: str | None = opts.get("keyfile", None, _path("keyfile"))
    cafile: str | None = opts.get("cafile", None, _path("cafile"))
    client_cert = opts.get("client_cert", None)
    if client_cert is not None and client_cert not in CLIENT_CERT:
        listed = ", ".join(repr(c) for c in CLIENT_CERT)
        raise ValueError(f"tcp option 'client_cert' must be one of {listed}, got {client_cert!r}")
    if given is not True and not files:
        if hostname is not None:
            raise ValueError(
                "tcp option 'server_hostname' is for TLS, which is off: give 'cafile' (or "
                "tls=True, to trust the system's CAs) too"
            )
        return None
    if keyfile is not None and certfile is None:
        raise ValueError("tcp option 'keyfile' needs 'certfile' (the certificate it goes with)")
    if client_cert is None:
        client_cert = "required" if cafile is not None else "none"
    elif client_cert != "none" and cafile is None:
        raise ValueError(
            f"tcp option client_cert={client_cert!r} needs 'cafile': the CA that signed the "
            "client certificates the server accepts"
        )
    server: ssl.SSLContext | None = None
    if certfile is not None:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _load_chain(server, certfile, keyfile)
        if cafile is not None:
            _load_ca(server, cafile)
        server.verify_mode = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }[client_cert]
    if cafile is None:  # the system's CAs
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:  # that CA only (verify the certificate and the host name, TLS 1.2 at least)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_ca(client, cafile)
    if certfile is not None:
        _load_chain(client, certfile, keyfile)
    return TlsSettings(server, client, hostname)


def _load_chain(context: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        raise ValueError(
            f"tcp options certfile={certfile!r}"
            + (f", keyfile={keyfile!r}" if keyfile else "")
            + f": not a PEM certificate and matching private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ValueError(f"tcp option 'certfile' {certfile!r}: {exc.strerror or exc}") from None


def _load_ca(context: ssl.SSLContext, cafile: str) -> None:
    try:
        context.load_verify_locations(cafile=cafile)
    except ssl.SSLError as exc:
        raise ValueError(
            f"tcp option cafile={cafile!r}: no PEM CA certificate in it ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ValueError(f"tcp option 'cafile' {cafile!r}: {exc.strerror or exc}") from None


def _escape(value: str) -> str:
    """An attribute value escaped as RFC 4514 says."""
    out = []
    for index, char in enumerate(value):
        if char in ',+"\\<>;' or (char == "#" and index == 0):
            out.append("\\" + char)
        elif char == " " and (index == 0 or index == len(value) - 1):
            out.append("\\ ")
        elif char == "\x00":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def subject_of(cert: Any) -> str | None:
    """The subject of a certificate as ``getpeercert()`` gives it, as an RFC 4514 string
    (``"CN=orders,O=Shop"``: the most specific part first, as ``cryptography``'s
    ``Name.rfc4514_string()`` writes it), or None when there is no certificate or subject.

    Attribute types without an RFC 4514 short name keep the name Python gives them
    (``emailAddress=...``).
    """
    if not isinstance(cert, dict):
        return None
    subject = cert.get("subject")
    if not subject:
        return None
    parts = []
    for rdn in reversed(subject):
        parts.append(
            "+".join(f"{_SHORT.get(key, key)}={_escape(str(value))}" for key, value in rdn)
        )
    return ",".join(parts)


def tls_failure(exc: BaseException) -> str:
    """One line saying why a TLS handshake or connection failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "the handshake took too long"
    return str(exc) or type(exc).__name__


class _Handshake(asyncio.BufferedProtocol):
    """An accepted connection until its TLS handshake is done: it admits or refuses it, runs
    the handshake, and keeps what arrives between the handshake's end and the hand-over to the
    :class:`ServerProtocol` (the first frames often come with the handshake's last bytes).

    uvloop starts reading a connection after ``connection_made`` even when it paused it there,
    so the client's first TLS bytes can reach this protocol before ``start_tls`` took the
    socket over: they are kept (``_ahead``, reading paused) and fed to the TLS protocol once it
    is connected, before the socket is read again (:meth:`_replay`)."""

    def __init__(self, listener: TlsListener) -> None:
        self._listener = listener
        self._early: list[bytes] = []
        self._ahead: list[bytes] = []
        self._raw: asyncio.Transport | None = None
        self._started = False
        self._eof = False
        self._lost = False
        self._buffer = loop_read_view(listener.loop)
        self.where = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The TCP connection is accepted: pause it, and start the handshake in a task."""
        # A stream transport, but not always an asyncio.Transport: uvloop's are not subclasses.
        transport = cast("asyncio.Transport", transport)
        transport.pause_reading()  # nothing is read before start_tls takes the socket over
        peername = transport.get_extra_info("peername")
        host = None
        if peername:
            host = str(peername[0])
            self.where = where(peername[0], peername[1])
        listener = self._listener
        if listener.closed:
            transport.abort()
            return
        limit = listener.limits.max_connections
        if len(listener.connections) + len(listener.handshakes) >= limit:
            listener.receiver.frame_dropped(
                "too_many_connections",
                f"tcp peer {self.where}: {len(listener.connections)} connections are open and "
                f"{len(listener.handshakes)} in their TLS handshake (max_connections={limit}); "
                "closed",
            )
            transport.abort()
            return
        self._raw = transport
        task = listener.loop.create_task(self._handshake(transport, host))
        listener.handshakes.add(task)
        task.add_done_callback(listener.handshakes.discard)
        # Runs right after the task's first step, which calls start_tls: that queued the TLS
        # protocol's connection_made and the resumption of reading, so _replay, queued now,
        # runs after both and before the loop next reads the socket.
        listener.loop.call_soon(self._queue_replay)

    async def _handshake(self, raw: asyncio.Transport, host: str | None) -> None:
        listener = self._listener
        self._started = True
        try:
            tls = await listener.loop.start_tls(
                raw,
                self,
                listener.context,
                server_side=True,
                ssl_handshake_timeout=listener.handshake_timeout,
            )
        except asyncio.CancelledError:
            raw.abort()
            raise
        except Exception as exc:
            raw.abort()
            listener.receiver.frame_dropped(
                "tls_handshake",
                f"tcp peer {self.where}: TLS handshake failed: {tls_failure(exc)}; disconnected",
            )
            return
        if tls is None:  # start_tls is typed Optional; it returns a transport on success
            raw.abort()
            return
        if self._lost or listener.closed:
            tls.abort()
            return
        protocol = ServerProtocol(listener)
        protocol.set_identity(subject_of(tls.get_extra_info("peercert")))
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        self._hand_over(protocol)

    def _hand_over(self, protocol: ServerProtocol) -> None:
        """Give ``protocol`` what came before it took over, as if it had read it."""
        early, self._early = self._early, []
        for chunk in early:
            _feed(protocol, chunk)
        if self._eof:
            protocol.eof_received()

    def _queue_replay(self) -> None:
        if self._ahead:
            self._listener.loop.call_soon(self._replay)

    def _replay(self) -> None:
        """Feed the TLS protocol the bytes read before ``start_tls`` took the socket over."""
        ahead, self._ahead = self._ahead, []
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        tls = raw.get_protocol()
        if tls is self:  # start_tls did not take over: the handshake task failed already
            return
        for chunk in ahead:
            _feed(tls, chunk)

    # -- the application protocol while the handshake finishes ----------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._buffer[:nbytes])
        if self._started:
            self._early.append(data)  # decrypted: the TLS transport's, before the hand-over
        elif self._raw is not None:
            self._ahead.append(data)  # raw TLS bytes, read though paused (uvloop)
            self._raw.pause_reading()  # effective now that reading has started

    def eof_received(self) -> bool | None:
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give ``protocol`` ``data`` as if its transport had read it."""
    if not hasattr(protocol, "get_buffer"):  # a plain Protocol (Python 3.10's TLS one)
        cast("asyncio.Protocol", protocol).data_received(data)
        return
    buffered = cast("asyncio.BufferedProtocol", protocol)
    start = 0
    while start < len(data):
        buffer = memoryview(buffered.get_buffer(len(data) - start)).cast("B")
        piece = data[start : start + len(buffer)]
        buffer[: len(piece)] = piece
        buffered.buffer_updated(len(piece))
        start += len(piece)


class TlsListener(TcpListener):
    """A tcp listener whose connections speak TLS (see the module docstring).

    :param context: the server-side context every handshake uses.
    :param handshake_timeout: seconds a handshake may take.
    """

    def __init__(
        self,
        receiver: Receiver,
        limits: ServerLimits,
        context: ssl.SSLContext,
        handshake_timeout: float,
    ) -> None:
        super().__init__(receiver, limits)
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.handshakes: set[asyncio.Task[None]] = set()

    def accept(self) -> asyncio.BaseProtocol:
        """The protocol of a connection just accepted: its handshake first."""
        return _Handshake(self)

    async def aclose(self) -> None:
        """Stop the handshakes in progress, then close as a plain tcp listener does."""
        handshakes = list(self.handshakes)
        for task in handshakes:
            task.cancel()
        if handshakes:
            await asyncio.wait(handshakes, timeout=CLOSE_GRACE)
        await super().aclose()
