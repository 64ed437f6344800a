"""Small helpers for tests over distro: wait on events with a bound, never sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .._message import Message

__all__ = ["Recorder", "wait_until"]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Wait until ``condition()`` is true, polling the loop; fail after ``timeout`` seconds.

    :raises AssertionError: the condition was still false at the deadline.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.002)


class Recorder:
    """A handler that records the messages it gets and lets a test wait for a count of them."""

    def __init__(self, result: object = None) -> None:
        self.messages: list[Message] = []
        self.result = result
        self._changed: asyncio.Event | None = None

    def __call__(self, msg: Message) -> object:
        self.messages.append(msg)
        if self._changed is not None:
            self._changed.set()
        return self.result

    @property
    def payloads(self) -> list[object]:
        """The payloads received, in order."""
        return [m.payload for m in self.messages]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        """Wait until at least ``count`` messages arrived; return them.

        :raises AssertionError: fewer arrived within ``timeout``.
        """
        if self._changed is None:
            self._changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.messages) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"got {len(self.messages)} of {count} messages within {timeout}s"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.messages
