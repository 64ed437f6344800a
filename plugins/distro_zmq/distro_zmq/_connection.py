"""The client side: a DEALER socket connected to one server's ROUTER.

ZeroMQ connects in the background and reconnects by itself, so opening never fails for want of
a server: frames sent before the server is there wait in the socket's queue (up to the
high-water mark) and go out once it is. At the high-water mark a send waits at most
``send_timeout`` seconds, then raises :class:`distro_core.TransportError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import cast

import zmq
import zmq.asyncio

import distro_core as distro

from ._errors import wrap

__all__ = ["ZmqConnection"]

BATCH = 512
"""Replies taken without awaiting once the socket is readable; then the loop gets a turn."""

_log = logging.getLogger("distro.zmq")
_NOBLOCK = zmq.NOBLOCK


class ZmqConnection(distro.Connection):
    """A DEALER socket feeding replies to a :class:`distro_core.ClientReceiver`.

    :ivar endpoint: the server's endpoint.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        socket: zmq.asyncio.Socket,
        receiver: distro.ClientReceiver,
        endpoint: str,
        send_timeout: float,
        linger_ms: int,
    ) -> None:
        self.endpoint = endpoint
        # Replies come back on the link the request went out on; the text only names it.
        self.reply_to = f"zmq:{next(self._ids)}"
        self._socket = socket
        self._sync: zmq.Socket[bytes] = zmq.Socket.shadow(socket.underlying)
        self._send = socket.send
        self._receiver = receiver
        self._send_timeout = send_timeout
        self._linger_ms = linger_ms
        self._closed = False
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._read(), name=f"distro-zmq-client {endpoint}"
        )

    async def send(self, data: bytes, message: distro.Message) -> None:
        """Queue one frame for the server.

        :raises distro.TransportError: the queue stayed at the high-water mark for
            ``send_timeout`` seconds (the server is not reading, or not there).
        :raises distro.ConnectionError: the connection is closed.
        """
        if self._closed:
            raise distro.ConnectionError(f"zmq: connection to {self.endpoint} is closed")
        # The asyncio socket tries a non-blocking send first and hands back a finished future
        # unless the queue is full, so the common case never waits on the loop.
        done = cast("asyncio.Future[object]", self._send(data))
        if not done.done():
            try:
                await asyncio.wait_for(done, self._send_timeout)
            except asyncio.TimeoutError:
                raise distro.TransportError(
                    f"zmq: send to {self.endpoint} waited {self._send_timeout:g}s at the "
                    "high-water mark and was given up (the server is not reading, or not there)"
                ) from None
            except (zmq.ZMQError, OSError) as exc:
                raise wrap(exc, f"send to {self.endpoint}") from exc
            return
        error = done.exception()
        if error is not None:
            if isinstance(error, (zmq.ZMQError, OSError)):
                raise wrap(error, f"send to {self.endpoint}") from error
            raise error

    async def aclose(self) -> None:
        """Stop reading and close the socket; frames still queued get ``linger`` seconds to
        leave, in ZeroMQ's I/O thread, so this never blocks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._socket.close(linger=self._linger_ms)

    async def _read(self) -> None:
        arecv = self._socket.recv_multipart
        recv = self._sync.recv
        sync = self._sync
        while True:
            try:
                frames = await arecv()
                self._take(frames)
                for _ in range(BATCH):
                    data = recv(_NOBLOCK)
                    if sync.rcvmore:
                        self._take([data, *sync.recv_multipart(_NOBLOCK)])
                    else:
                        self._receiver.frame_received(data)
            except zmq.Again:
                continue
            except (zmq.ZMQError, OSError) as exc:
                if not self._closed:
                    error = wrap(exc, f"receiving from {self.endpoint}")
                    error.__cause__ = exc
                    self._receiver.connection_lost(error)
                return

    def _take(self, frames: list[bytes]) -> None:
        if len(frames) == 1:
            self._receiver.frame_received(frames[0])
        else:
            # Only a server that is not distro sends these; there is no counter on a client.
            _log.warning(
                "distro zmq client: dropped a %d-frame message from %s; a reply is one frame",
                len(frames),
                self.endpoint,
            )
