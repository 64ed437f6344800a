"""The client side: a DEALER socket connected to one server's ROUTER.

ZeroMQ connects in the background and reconnects by itself, so opening never fails for want of
a server: frames sent before the server is there wait in the socket's queue (up to the
high-water mark) and go out once it is. At the high-water mark a send waits at most
``send_timeout`` seconds, then raises :class:`distro_core.TransportError`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import zmq

import distro_core as distro

from ._errors import wrap
from ._pump import SocketPump

__all__ = ["ZmqConnection"]

BATCH = 512
"""Replies taken in one go; then the loop gets a turn and the drain goes on at the next."""

_log = logging.getLogger("distro.zmq")
_NOBLOCK = zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE


class ZmqConnection(distro.Connection):
    """A DEALER socket feeding replies to a :class:`distro_core.ClientReceiver`.

    :ivar endpoint: the server's endpoint.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        receiver: distro.ClientReceiver,
        endpoint: str,
        send_timeout: float,
        linger_ms: int,
    ) -> None:
        self.endpoint = endpoint
        # Replies come back on the link the request went out on; the text only names it.
        self.reply_to = f"zmq:{next(self._ids)}"
        self._sock = sock
        self._send = sock.send
        self._recv = sock.recv
        self._more = sock.getsockopt
        self._receiver = receiver
        self._send_timeout = send_timeout
        self._linger_ms = linger_ms
        self._pump = SocketPump(
            sock, self._drain, receiver.connection_lost, f"client of {endpoint}"
        )

    async def send(self, data: bytes, message: distro.Message) -> None:
        """Queue one frame for the server.

        :raises distro.TransportError: the queue stayed at the high-water mark for
            ``send_timeout`` seconds (the server is not reading, or not there).
        :raises distro.ConnectionError: the connection is closed.
        """
        pump = self._pump
        if pump.closed:
            raise distro.ConnectionError(f"zmq: connection to {self.endpoint} is closed")
        try:
            self._send(data, _NOBLOCK)
        except zmq.Again:
            await self._send_when_writable(data)
        except zmq.ZMQError as exc:
            raise wrap(exc, f"send to {self.endpoint}") from exc
        # The send may have taken the socket's wake-up for a reply that arrived meanwhile.
        pump.poke()

    async def _send_when_writable(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._send_timeout
        while True:
            if not await self._pump.writable(deadline - loop.time()):
                raise distro.TransportError(
                    f"zmq: send to {self.endpoint} waited {self._send_timeout:g}s at the "
                    "high-water mark and was given up (the server is not reading, or not there)"
                )
            try:
                self._send(data, _NOBLOCK)
                return
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                raise wrap(exc, f"send to {self.endpoint}") from exc

    async def aclose(self) -> None:
        """Stop reading and close the socket; frames still queued get ``linger`` seconds to
        leave, in ZeroMQ's I/O thread, so this never blocks. Idempotent."""
        self._pump.close(self._linger_ms)

    def _drain(self) -> bool:
        """Hand every queued reply to the receiver, up to :data:`BATCH`.

        :returns: True when replies may be left (the budget ran out).
        :raises zmq.ZMQError: the socket failed (the pump handles it).
        """
        recv = self._recv
        more = self._more
        receiver = self._receiver
        pump = self._pump
        for _ in range(BATCH):
            if pump.closed:
                return False
            try:
                data = recv(_NOBLOCK)
                if more(_RCVMORE):
                    self._drop_rest()
                    continue
            except zmq.Again:
                return False
            try:
                receiver.frame_received(data)
            except Exception as exc:  # a fault in the core must not stop the client reading
                _log.error("distro zmq client: receiver raised %r on a reply", exc)
        return True

    def _drop_rest(self) -> None:
        count = 1
        while self._more(_RCVMORE):
            self._recv(_NOBLOCK, copy=False)
            count += 1
        # Only a server that is not distro sends these; a client has no drop counter.
        _log.warning(
            "distro zmq client: dropped a %d-frame message from %s; a reply is one frame",
            count,
            self.endpoint,
        )
