"""Confirmed sends, the server's side: a request carrying ``"confirm": true`` is handled at
most once per window of recently seen ids (``_confirm.SeenWindow``).

:class:`Confirmed` is asked (by one cheap ``"confirm" in headers`` test in the server's hot
path) about each such request before it is dispatched:

* **a new id**: it is dispatched as usual, but with a :class:`ConfirmingPeer` in place of its
  peer, which keeps the reply the server sends through it and, when the server settles the
  frame, remembers that reply in the window (or forgets the id when the handlers never ran to
  the end: shed, expired, cancelled at close, the server's own error; a repeat is then handled
  afresh);
* **a repeat of an id whose handling finished**: the reply it got is sent again, the same
  bytes, to the repeat's ``replyTo`` through the repeat's peer; no handler runs;
* **a repeat while the first is being handled**: nothing is sent (the first answers).

Repeats are counted in ``ServerStats.repeats`` and settled ``HANDLED`` with the transport.
The window is the server process's own memory: a server that is killed forgets it (so a
confirmed send is handled at least once, and at most once per server process and window).
"""

from __future__ import annotations

import math
import time
from typing import Any

from ._confirm import SeenWindow
from ._exceptions import TransportError
from ._stats import ServerLog, ServerStats
from ._transport import Outcome, Peer

__all__ = ["Confirmed", "ConfirmingPeer", "make_window"]


def make_window(size: object, max_bytes: object, max_age: object) -> SeenWindow:
    """The window of a server's options ``confirm_window``, ``confirm_window_bytes`` and
    ``confirm_window_age``.

    :raises TypeError: a count that is not an integer, an age that is not a number.
    :raises ValueError: a negative count, an age that is not positive and finite.
    """
    for name, value in (("confirm_window", size), ("confirm_window_bytes", max_bytes)):
        if type(value) is not int:
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if not isinstance(max_age, (int, float)) or type(max_age) is bool:
        raise TypeError(f"confirm_window_age must be a number of seconds, got {max_age!r}")
    if not 0 < max_age < math.inf:
        raise ValueError(f"confirm_window_age must be > 0 and finite, got {max_age!r}")
    assert isinstance(size, int) and isinstance(max_bytes, int)
    return SeenWindow(size, max_bytes, float(max_age))


class Confirmed:
    """The confirmed requests one server has seen.

    :param window: the ids remembered and their replies.
    :param stats: the server's counters (``repeats``, ``replies_sent``).
    :param log: the server's log (a re-sent reply the transport cannot send).
    :param spoofable: the transport's source addresses can be forged (datagrams): a cached
        reply goes only to a repeat at least as large as the first delivery, so that a short
        forged repeat cannot make the server send more than handling it afresh would.
    """

    __slots__ = ("_last", "_log", "_spoofable", "_stats", "window")

    def __init__(
        self, window: SeenWindow, stats: ServerStats, log: ServerLog, spoofable: bool
    ) -> None:
        self.window = window
        self._stats = stats
        self._log = log
        self._spoofable = spoofable
        self._last: ConfirmingPeer | None = None

    def begin(self, msg_id: str, headers: dict[str, Any], peer: Peer, data: bytes) -> Peer | None:
        """A message whose headers hold ``confirm`` arrived as ``data`` from ``peer``.

        :returns: the peer to dispatch it with (a :class:`ConfirmingPeer` for a new confirmed
            request; ``peer`` itself when it is not one: ``confirm`` not ``true``, or no
            string ``replyTo``); None when it was a repeat, answered (or not) here.
        """
        reply_to = headers.get("replyTo")
        if headers["confirm"] is not True or type(reply_to) is not str:
            return peer
        now = time.monotonic()
        new, reply = self.window.begin(msg_id, now, len(data))
        if new:
            confirming = self._last = ConfirmingPeer(peer, self.window, msg_id, data)
            return confirming
        self._stats.repeats += 1
        if reply is not None:
            first = self.window.first_size(msg_id)
            if self._spoofable and len(reply) > len(data) and len(data) < first:
                self._log.dropped("amplification", f"repeat of {msg_id}: shorter than the first")
            else:
                try:
                    peer.send(reply, reply_to)
                except TransportError as exc:
                    self._log.dropped("reply_failed", f"reply to the repeat of {msg_id}: {exc}")
                else:
                    self._stats.replies_sent += 1
        if peer.settles:
            peer.settle(Outcome.HANDLED, None)
        return None

    def abandon(self, data: bytes) -> None:
        """Dispatching ``data`` failed with the server's own error before its frame was
        settled: a confirmed request begun for it is forgotten (a repeat runs afresh)."""
        last = self._last
        if last is not None and last.data is data:
            last.forget()


class ConfirmingPeer(Peer):
    """The peer a new confirmed request is dispatched with: it forwards everything to the
    frame's own peer, keeps the reply sent through it and, when the server settles the frame,
    remembers that reply for repeats (or forgets the id when the handlers did not finish).

    It hashes and compares equal as the frame's own peer, so that the server's fair-share
    bookkeeping (per peer) is not changed by it.
    """

    __slots__ = ("_msg_id", "_over", "_peer", "_reply", "_window", "data")

    settles = True  # always: settling is when the reply is remembered

    def __init__(self, peer: Peer, window: SeenWindow, msg_id: str, data: bytes) -> None:
        super().__init__(peer.host)
        self._peer = peer
        self._window = window
        self._msg_id = msg_id
        self._reply: bytes | None = None
        self._over = False
        self.data = data

    def __hash__(self) -> int:
        return hash(self._peer)

    def __eq__(self, other: object) -> bool:
        if type(other) is ConfirmingPeer:
            return self._peer == other._peer
        return self._peer == other

    def send(self, data: bytes, reply_to: str) -> None:
        """Send ``data`` (the reply) through the frame's peer, and keep it."""
        self._reply = data
        self._peer.send(data, reply_to)

    def settle(self, outcome: Outcome, detail: str | None = None) -> None:
        """Remember the reply (the handlers finished) or forget the id (they did not: shed,
        expired, cancelled at close, the server's own error; or they failed over a transport
        that settles deliveries, which delivers it again); then settle the frame."""
        if not self._over:
            self._over = True
            if (
                outcome is Outcome.RETURNED
                or detail == "expired"
                or _internal(outcome, detail)
                # A transport that settles deliveries offers a failed one again (redelivery):
                # the redelivery must run the handlers, not get the failure back as a repeat.
                or (outcome is Outcome.FAILED and self._peer.settles)
            ):
                self._window.forget(self._msg_id)
            elif self._reply is not None:
                # Kept for the window's lifetime: a right-sized copy (an encoder's output may
                # keep a larger buffer behind it; orjson's keeps ~4 KiB).
                self._window.done(self._msg_id, bytes(memoryview(self._reply)), time.monotonic())
        if self._peer.settles:
            self._peer.settle(outcome, detail)

    def forget(self) -> None:
        """The handling did not finish: a repeat is handled afresh."""
        if not self._over:
            self._over = True
            self._window.forget(self._msg_id)


def _internal(outcome: Outcome, detail: str | None) -> bool:
    return outcome is Outcome.FAILED and detail is not None and detail.startswith("internal error")
