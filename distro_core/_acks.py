"""RECEIVED acknowledgements: where a server may send them, and the links it sends them on.

By default an acknowledgement goes only to the address the message came from (a header naming
another host would turn a server into a reflector aimed at third parties; docs/security.md).
Links to acknowledgement targets are kept open, at most :data:`MAX_LINKS` of them.
"""

from __future__ import annotations

import asyncio
import ipaddress

from . import _protocol
from ._exceptions import DistroError
from ._message import Message
from ._transport import Connection, Peer, RequestFailure, Transport

__all__ = ["MAX_LINKS", "Acknowledger"]

MAX_LINKS = 64
MAX_RESOLVED = 1024


class _Sink:
    """Receiver for acknowledgement links: nothing is expected back on them."""

    def frame_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def request_failed(self, request_id: str, failure: RequestFailure, detail: str) -> None:
        pass


class Acknowledger:
    """Sends the RECEIVED acknowledgements of one server over its transport.

    :param transport: the server's transport; acknowledgements use its ``connect(target=...)``.
    :param any_address: send to whatever ``address`` a header names, not only the sender's.
    """

    def __init__(self, transport: Transport, *, any_address: bool) -> None:
        self._transport = transport
        self._any_address = any_address
        self._links: dict[tuple[str, int], Connection] = {}
        self._resolved: dict[str, frozenset[str]] = {}

    async def send(
        self, msg: Message, target: tuple[str, int], peer: Peer
    ) -> tuple[str, str] | None:
        """Acknowledge ``msg`` to ``target``.

        :returns: None when sent, else ``(reason, detail)`` for the server's drop count.
        """
        host, port = target
        if not self._any_address and not await self._is_sender(host, peer.host):
            return (
                "ack_refused",
                f"message {msg.id} asks for RECEIVED at {host}:{port}, which is not its sender "
                f"({peer.host}); pass ack_any_address=True to allow it",
            )
        ack = _protocol.received(msg.id)
        try:
            link = self._links.get(target)
            if link is None:
                link = await self._transport.connect(_Sink(), target)
                if len(self._links) >= MAX_LINKS:
                    await _close_quietly(self._links.pop(next(iter(self._links))))
                self._links[target] = link
            await link.send(ack.to_bytes(), ack)
        except DistroError as exc:
            self._links.pop(target, None)
            return "ack_failed", f"RECEIVED for {msg.id} to {host}:{port}: {exc}"
        return None

    async def aclose(self) -> None:
        """Close every acknowledgement link."""
        links, self._links = list(self._links.values()), {}
        for link in links:
            await _close_quietly(link)

    async def _is_sender(self, host: str, sender: str | None) -> bool:
        if sender is None:
            return False
        if host == sender:
            return True
        addresses = self._resolved.get(host)
        if addresses is None:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None)
                addresses = frozenset(normalise(str(info[4][0])) for info in infos)
            except OSError:
                addresses = frozenset()
            if len(self._resolved) < MAX_RESOLVED:
                self._resolved[host] = addresses
        return normalise(sender) in addresses


def normalise(host: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); names lower-cased."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower()
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


async def _close_quietly(link: Connection) -> None:
    try:
        await link.aclose()
    except (DistroError, OSError):
        pass
