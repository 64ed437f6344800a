"""One NATS connection, as nats-py makes it, with a lean path for distro's frames.

nats-py keeps the connection: TLS, credentials, the server pool, reconnection and
resubscription. Two of its per-message costs are avoided here, measured against nats-py's own
publish and subscription callback (see the README, "Performance"):

* **receiving**: nats-py builds a ``Msg`` (decoding the subject and reply, parsing headers),
  queues it on the subscription and wakes a task per subscription to await a coroutine
  callback. :class:`Link` hands the bytes of a message of a subscription registered with
  :meth:`Link.route` straight to a plain function instead, in the read loop;
* **sending**: :meth:`Link.publish` appends the ``PUB`` command to nats-py's write buffer
  and wakes nats-py's flusher, as ``publish`` does, without its per-call checks (subjects are
  made valid by :mod:`._subjects`), and without awaiting: replies are sent from
  :meth:`~distro_core.transport.Peer.send`, which may not block.

Both use nats-py internals (``_process_msg``, ``_pending``, ``_pending_data_size``,
``_flush_queue``), stable across nats-py 2.x; the dependency is pinned below 3.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

import distro_core as distro
from distro_core import transport as kit

from ._config import NatsConfig

__all__ = ["NATS_ERRORS", "Deliver", "Link", "connect", "log"]

log = logging.getLogger("distro.nats")

Deliver = Callable[[bytes, bytes, bytes, "bytes | None"], None]
"""Takes one message of a routed subscription: ``(subject, reply, data, headers)``."""

NATS_ERRORS: kit.ErrorTable = (
    (nats.errors.NoServersError, distro.ConnectionError),
    (nats.errors.ConnectionClosedError, distro.ConnectionError),
    (nats.errors.TimeoutError, distro.ConnectionError),
    (nats.errors.OutboundBufferLimitError, distro.ConnectionError),
    (nats.errors.StaleConnectionError, distro.ConnectionError),
    (nats.errors.UnexpectedEOF, distro.ConnectionError),
    (nats.errors.AuthorizationError, distro.ConnectionError),
)
"""nats-py's exceptions and the distro errors they become (see :func:`kit.map_error`)."""

_CRLF = b"\r\n"
_CONNECTED = Client.CONNECTED


class Link(Client):
    """A nats-py client whose routed subscriptions bypass ``Msg`` and the callback tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[int, Deliver] = {}
        self.back = asyncio.Event()
        self.on_lost: Callable[[], None] | None = None
        """Called when the connection to NATS is lost (nats-py then reconnects)."""

    def route(self, sid: int, deliver: Deliver) -> None:
        """Hand every message of subscription ``sid`` to ``deliver``, in the read loop."""
        self.routes[sid] = deliver

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        deliver = self.routes.get(sid)
        if deliver is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        deliver(subject, reply, data, headers)

    def publish_now(self, head: bytes, data: bytes) -> None:
        """Queue one ``PUB`` (``head`` is ``b"PUB <subject> [reply] "``) without waiting.

        :raises distro.MessageTooLarge: ``data`` is over the server's ``max_payload``.
        :raises distro.ConnectionError: the connection is down (nothing is buffered).
        """
        if self._status != _CONNECTED:
            raise distro.ConnectionError("nats: not connected")
        if len(data) > self._max_payload:
            raise distro.MessageTooLarge(len(data), self._max_payload, "nats")
        command = b"".join((head, str(len(data)).encode(), _CRLF, data, _CRLF))
        self._pending.append(command)
        self._pending_data_size += len(command)
        queue = self._flush_queue
        if queue is not None and queue.empty():
            queue.put_nowait(asyncio.get_running_loop().create_future())

    @property
    def congested(self) -> bool:
        """Whether more than ``pending_size`` bytes wait to be written (wait for
        :meth:`written` before queueing more)."""
        congested: bool = self._pending_data_size > self._max_pending_size
        return congested

    @property
    def pending_size(self) -> int:
        """nats-py's write buffer size (the ``pending_size`` option)."""
        size: int = self._max_pending_size
        return size

    @property
    def buffered(self) -> int:
        """Bytes queued and not yet handed to the socket."""
        size: int = self._pending_data_size
        return size

    async def written(self, timeout: float) -> None:
        """Wait until what is queued now is handed to the socket (and drained).

        :raises distro.ConnectionError: not within ``timeout`` seconds, or the link broke.
        """
        queue = self._flush_queue
        if self._status != Client.CONNECTED or queue is None:
            raise distro.ConnectionError("nats: not connected")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(queue.put(future), timeout)
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise distro.ConnectionError(
                f"nats: the server took no data for {timeout:g}s (connect_timeout)"
            ) from None


async def connect(config: NatsConfig, *, role: str, reconnects: bool = True) -> Link:
    """Open a :class:`Link` to the NATS servers of ``config``.

    :param role: what it is for, in log messages (``server``, ``client``).
    :raises distro.ConnectionError: no NATS server can be reached within ``connect_timeout``.
    """
    link = Link()

    async def disconnected() -> None:
        link.back.clear()
        if link.on_lost is not None and not link.is_closed:
            link.on_lost()

    async def reconnected() -> None:
        link.back.set()
        url = link.connected_url
        log.warning("nats transport: %s reconnected to %s", role, url.netloc if url else "?")

    async def error(exc: Exception) -> None:
        log.debug("nats transport: %s on %s: %r", role, config.location, exc)

    kwargs = dict(config.connect_kwargs)
    if not reconnects:
        kwargs["max_reconnect_attempts"] = 0
    try:
        await asyncio.wait_for(
            link.connect(
                servers=list(config.servers),
                error_cb=error,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                allow_reconnect=True,
                skip_subject_validation=True,
                **kwargs,
            ),
            config.connect_timeout * max(1, len(config.servers)) + 1,
        )
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
        await _abandon(link)
        context = f"nats transport: cannot connect to {config.location}"
        raise kit.map_error(exc, context, table=NATS_ERRORS) from exc
    link.back.set()
    return link


async def _abandon(link: Link) -> None:
    try:
        await asyncio.wait_for(link.close(), 2.0)
    except Exception as exc:
        log.debug("nats transport: closing a failed link: %r", exc)
