"""The peer of a pub/sub listener: the bus itself."""

from __future__ import annotations

from collections.abc import Callable

from .._transport import Peer

__all__ = ["BusPeer"]


class BusPeer(Peer):
    """Every sender as a pub/sub server sees it: the bus, every sender at once. A listener
    makes one and hands it over with every frame; replies go to the request's ``replyTo``
    (a channel or subject of the bus) through ``reply``.

    :param host: the bus, as :attr:`Peer.host` names it (the core's RECEIVED checks use it).
    :param reply: publishes a reply: ``reply(data, reply_to)``; raises ``TransportError``
        when it cannot.
    """

    __slots__ = ("_reply",)

    def __init__(self, host: str | None, reply: Callable[[bytes, str], None]) -> None:
        super().__init__(host)
        self._reply = reply

    def send(self, data: bytes, reply_to: str) -> None:
        """Publish ``data`` on ``reply_to``."""
        self._reply(data, reply_to)
