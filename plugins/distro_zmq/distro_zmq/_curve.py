"""CURVE for the zmq transport: encryption and authentication by ZeroMQ's own CurveZMQ.

A CURVE server has a keypair and gives out its public key; a client must know that key to
connect at all (its handshake is encrypted to it), and has a keypair of its own. Traffic is
encrypted both ways. Which client keys a server lets in is decided by a ZAP handler (ZeroMQ's
authentication protocol, RFC 27): pyzmq's :class:`~zmq.auth.thread.ThreadAuthenticator`, one per
ZeroMQ context, started with the first CURVE server of that context and stopped with the last
(a context with a ZAP handler still running could not be terminated). Each server has its own
ZAP domain, so servers with different ``curve_clients`` can share a context; the handler
also gives every admitted connection its client's public key (Z85) as ZeroMQ's ``User-Id``,
which the listener hands to the core as the peer's ``identity``.

A client key a server refuses is counted in ``server.stats.dropped["curve_auth"]`` and logged
(the handler runs in its thread and tells the event loop); the client's handshake fails with
an authentication error, which its ``open`` reports at once. A client with the wrong server
key never completes a handshake at all: its ``open`` times out.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import threading
from collections.abc import Callable

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

import distro_core as distro
from distro_core import transport as kit

from ._options import Curve

__all__ = ["CURVE_OVERHEAD", "Admission", "admit", "configure_client", "z85_key"]

CURVE_OVERHEAD = 64
"""Bytes a CURVE MESSAGE adds to a frame (its name, a nonce, flags and a MAC: 33), rounded
up: a server's ``MAXMSGSIZE`` is raised by this much, as libzmq checks the encrypted size."""

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq looks for a context's ZAP handler."""

_START_ATTEMPTS = 50
_START_RETRY = 0.02
_ids = itertools.count(1)
_lock = threading.Lock()


def z85_key(key: bytes) -> bytes:
    """``key`` (32 raw bytes or 40 of Z85) as Z85 text, as ZeroMQ and its ZAP handler show it."""
    return key if len(key) == 40 else z85.encode(key)


def configure_client(sock: zmq.Socket[bytes], curve: Curve, endpoint: str) -> None:
    """Make ``sock`` a CURVE client of the server whose public key ``curve`` names, with the
    client's own keypair (from its secret key) or a fresh one.

    :raises ValueError: ``curve`` names no server key.
    """
    if curve.server_key is None:
        raise ValueError(
            f"zmq: a CURVE client of {endpoint} needs 'curve_server_key', the server's public "
            "key ('curve_secret_key' alone makes a CURVE server)"
        )
    if curve.secret_key is None:
        public, secret = zmq.curve_keypair()
    else:
        secret = z85_key(curve.secret_key)
        public = zmq.curve_public(secret)
    sock.setsockopt(zmq.CURVE_SERVERKEY, z85_key(curve.server_key))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


class _Gate:
    """The ZAP credentials provider of one server's domain (called in the handler's thread)."""

    def __init__(self, clients: frozenset[bytes] | None, refused: Callable[[bytes], None]) -> None:
        self.clients = clients
        self.refused = refused

    def callback(self, domain: str, key: bytes) -> bool:
        if self.clients is None or key in self.clients:
            return True
        self.refused(key)
        return False


class _Handler:
    """A context's ZAP handler and how many servers use it.

    :param keep: keep it running when no server uses it (the process-wide context, which is
        never terminated: the next CURVE server finds it running).
    """

    def __init__(self, auth: ThreadAuthenticator, keep: bool) -> None:
        self.auth = auth
        self.keep = keep
        self.users = 0


async def _start(context: zmq.Context[zmq.Socket[bytes]]) -> ThreadAuthenticator | None:
    """Start a ZAP handler in ``context``, or None when another server of the context started
    one meanwhile. A handler stopped a moment ago may still hold the endpoint (libzmq releases
    it in its own thread): tried again for up to a second.

    :raises distro.TransportError: the endpoint stays taken (another ZAP handler runs in the
        context) or the handler cannot start.
    """
    for attempt in range(_START_ATTEMPTS):
        if context.underlying in _handlers:
            return None
        auth = ThreadAuthenticator(context)
        try:
            auth.start()
        except zmq.ZMQError as exc:
            auth.stop()
            if exc.errno == errno.EADDRINUSE and attempt + 1 < _START_ATTEMPTS:
                await asyncio.sleep(_START_RETRY)
                continue
            raise distro.TransportError(
                f"zmq: cannot start a ZAP handler for CURVE servers at {ZAP_ENDPOINT}: {exc} "
                "(is another ZAP handler running in this zmq.Context?)"
            ) from exc
        return auth
    raise AssertionError("unreachable")  # pragma: no cover


_handlers: dict[int, _Handler] = {}


class Admission:
    """One CURVE server's registration with its context's ZAP handler; :meth:`close` it with
    the server."""

    def __init__(self, key: int, domain: str, endpoint: str) -> None:
        self._key = key
        self._domain = domain
        self._closed = False
        self.endpoint = endpoint
        """The server's endpoint, for logs (the transport sets the bound one)."""

    def close(self) -> None:
        """Forget the server's domain; stop the handler when no server uses it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with _lock:
            handler = _handlers.get(self._key)
            if handler is None:
                return
            handler.auth.credentials_providers.pop(self._domain, None)
            handler.users -= 1
            if handler.users > 0 or handler.keep:
                return
            del _handlers[self._key]
        handler.auth.stop()


async def admit(
    context: zmq.Context[zmq.Socket[bytes]],
    sock: zmq.Socket[bytes],
    curve: Curve,
    receiver: kit.Receiver,
    endpoint: str,
    keep: bool,
) -> Admission:
    """Make ``sock`` (before it binds) a CURVE server with the secret key of ``curve``, its
    clients checked by the context's ZAP handler (started if need be) in a domain of its own.

    :param keep: ``context`` is the process-wide one: its handler runs on when the last
        CURVE server closes (a user's context must be free to terminate).
    :raises ValueError: ``curve`` has no secret key.
    :raises distro.TransportError: the ZAP handler cannot start.
    """
    if curve.secret_key is None:
        raise ValueError(
            f"zmq: a CURVE server at {endpoint} needs 'curve_secret_key' (its own secret key); "
            "'curve_server_key' is what its clients are given"
        )
    loop = asyncio.get_running_loop()
    domain = f"distro-{next(_ids)}"
    key = context.underlying
    admission = Admission(key, domain, endpoint)

    def refused(client: bytes) -> None:  # in the ZAP handler's thread
        detail = (
            f"zmq: client key {client.decode('ascii', 'replace')} is not in curve_clients of "
            f"the server at {admission.endpoint}; refused"
        )
        try:
            loop.call_soon_threadsafe(receiver.frame_dropped, "curve_auth", detail)
        except RuntimeError:  # the loop has closed: nobody is left to count it
            pass

    with _lock:
        handler = _handlers.get(key)
        if handler is not None:
            handler.users += 1
    if handler is None:
        auth = await _start(context)
        with _lock:
            handler = _handlers.get(key)
            if handler is None:
                if auth is None:  # pragma: no cover - it was there a moment ago, and is gone
                    raise distro.TransportError("zmq: the ZAP handler stopped while starting")
                handler = _handlers[key] = _Handler(auth, keep)
            elif auth is not None:  # another event loop's server started one meanwhile
                auth.stop()
            handler.users += 1
    with _lock:
        clients = None if curve.clients is None else frozenset(map(z85_key, curve.clients))
        handler.auth.configure_curve_callback(domain, _Gate(clients, refused))
    try:
        sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode("ascii"))
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, z85_key(curve.secret_key))
    except BaseException:
        admission.close()
        raise
    return admission
