"""Confirmed sends: the pure parts. No I/O, no clock of its own (times are passed in).

``client.send(msg, confirm=True)`` sends the message as a request carrying ``"confirm": true``
(docs/wire-format.md): the server answers it with an ordinary reply once its handlers have
finished (the payload is whatever answers it, usually null). Over a transport that can lose or
repeat a frame, the client sends the same frame again until the confirmation comes, so a
server may see one message several times: it remembers the ids it handled recently
(:class:`SeenWindow`) and answers a repeat with the reply it sent the first time, without
running the handlers again. A request is answered once, whatever the transport does.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["CONFIRM", "Retransmit", "SeenWindow"]

CONFIRM = "confirm"
"""The header that asks for a confirmation and for handling at most once per window."""


class SeenWindow:
    """Ids of recently handled messages and the reply each got, bounded in count, bytes and age.

    :param size: ids remembered at most.
    :param max_bytes: bytes of remembered replies at most.
    :param max_age: seconds an id is remembered (from its first delivery; from its reply
        once it has one).
    """

    __slots__ = ("_bytes", "_entries", "max_age", "max_bytes", "size")

    def __init__(self, size: int = 10_000, max_bytes: int = 8 << 20, max_age: float = 60.0):
        self.size = size
        self.max_bytes = max_bytes
        self.max_age = max_age
        # id -> (when it was handled, the reply sent or None while its handlers run, the size
        # of the frame it first came in)
        self._entries: OrderedDict[str, tuple[float, bytes | None, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, msg_id: str, now: float, size: int = 0) -> tuple[bool, bytes | None]:
        """A confirmed message arrived (in a frame of ``size`` bytes).

        :returns: ``(True, None)`` when it is new (run its handlers, then :meth:`done`);
            ``(False, reply)`` when it was seen: ``reply`` is the answer to send again, or None
            while its first delivery is still being handled (send nothing: that one answers).
        """
        self._expire(now)
        seen = self._entries.get(msg_id)
        if seen is not None:
            return False, seen[1]
        self._entries[msg_id] = (now, None, size)
        self._trim()
        return True, None

    def first_size(self, msg_id: str) -> int:
        """The size given to :meth:`begin` when ``msg_id`` first came; 0 if it is not known."""
        seen = self._entries.get(msg_id)
        return 0 if seen is None else seen[2]

    def done(self, msg_id: str, reply: bytes, now: float) -> None:
        """Remember the reply sent for ``msg_id`` (a repeat gets it again)."""
        old = self._entries.pop(msg_id, None)
        size = 0
        if old is not None:
            size = old[2]
            if old[1] is not None:
                self._bytes -= len(old[1])
        if len(reply) > self.max_bytes:
            self._entries[msg_id] = (now, None, size)  # remembered as seen, the reply too large
        else:
            self._entries[msg_id] = (now, reply, size)
            self._bytes += len(reply)
        self._trim()

    def forget(self, msg_id: str) -> None:
        """Its handling did not finish (the server closed): a repeat is handled afresh."""
        old = self._entries.pop(msg_id, None)
        if old is not None and old[1] is not None:
            self._bytes -= len(old[1])

    def _expire(self, now: float) -> None:
        entries = self._entries
        cutoff = now - self.max_age
        while entries:
            msg_id, (when, reply, _) = next(iter(entries.items()))
            if when >= cutoff:
                break
            del entries[msg_id]
            if reply is not None:
                self._bytes -= len(reply)

    def _trim(self) -> None:
        entries = self._entries
        while entries and (len(entries) > self.size or self._bytes > self.max_bytes):
            _, (_, reply, _) = entries.popitem(last=False)
            if reply is not None:
                self._bytes -= len(reply)


class Retransmit:
    """When a client sends an unconfirmed frame again: after ``first`` seconds, then each
    interval doubled up to ``longest``, never past the deadline.

    :param first: seconds before the first repeat.
    :param longest: the longest interval between repeats.
    """

    __slots__ = ("first", "longest")

    def __init__(self, first: float = 0.05, longest: float = 1.0) -> None:
        self.first = first
        self.longest = longest

    def intervals(self, timeout: float) -> list[float]:
        """The waits between sends within ``timeout`` seconds (the last ends at the deadline)."""
        waits: list[float] = []
        left = timeout
        wait = self.first
        while left > 0:
            step = min(wait, left)
            waits.append(step)
            left -= step
            wait = min(wait * 2, self.longest)
        return waits
