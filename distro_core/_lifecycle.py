"""The ways a server is run: ``async with server:`` and the blocking :meth:`Lifecycle.run`,
shared by every server through :class:`Lifecycle`, on top of its ``start`` and ``aclose``."""

from __future__ import annotations

import abc
import asyncio
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ._exceptions import StateError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Lifecycle"]

_L = TypeVar("_L", bound="Lifecycle")


class Lifecycle(abc.ABC):
    """``async with``, :meth:`run` and :meth:`serve_until_signalled` for a server that
    implements :meth:`start` and :meth:`aclose`."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start serving."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop serving; idempotent."""

    async def __aenter__(self: _L) -> _L:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then close gracefully. Blocks; for scripts.

        :raises StateError: called from inside a running event loop (use ``async with``).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StateError("server.run() blocks; inside a running loop use 'async with server'")
        asyncio.run(self.serve_until_signalled())

    async def serve_until_signalled(
        self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """Start, serve until one of ``signals`` arrives (or the server is closed), then close."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed = []
        for signum in signals:
            try:
                loop.add_signal_handler(signum, stop.set)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            async with self:
                await stop.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
