"""The ways a server (or a :class:`~distro_core.Service`) is run: ``async with server:``,
``await server.serve_until_signalled()`` and the blocking :meth:`Lifecycle.run` (on the event
loop :mod:`._loops` makes), shared through :class:`Lifecycle`, on top of its ``start`` and
``aclose``."""

from __future__ import annotations

import abc
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ._exceptions import StateError
from ._loops import LoopName
from ._loops import run as run_on
from ._stats import ServerLog

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

    def _signal_received(self, name: str) -> None:
        """Log the signal that ends :meth:`serve_until_signalled` (through the server's log)."""
        log = getattr(self, "_log", None)
        if isinstance(log, ServerLog):
            log.signalled(name)

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

    def run(self, *, loop: LoopName = "asyncio") -> None:
        """Serve until SIGINT or SIGTERM, then close gracefully. Blocks; for scripts.

        :param loop: the event loop to serve on: ``"asyncio"`` (:func:`asyncio.run`'s),
            ``"uvloop"`` (the ``uvloop`` extra) or ``"auto"`` (uvloop when installed). To
            serve on a loop of your own, await :meth:`serve_until_signalled` on it.
        :raises StateError: called from inside a running event loop (use ``async with``).
        :raises ImportError: ``loop="uvloop"`` and uvloop is not installed.
        :raises ValueError: ``loop`` is not one of those names.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise StateError("server.run() blocks; inside a running loop use 'async with server'")
        run_on(self.serve_until_signalled, loop)

    async def serve_until_signalled(
        self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
    ) -> None:
        """Start, serve until one of ``signals`` arrives, then close gracefully (the signal is
        logged at INFO, with the drain and the close). A signal while starting stops the start
        (a service's startup hooks are cancelled) and returns. Only the main thread can
        receive signals: elsewhere this serves until the task running it is cancelled.

        :raises AddressInUse: the address is taken (from :meth:`start`).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        stop = asyncio.Event()
        starting = True
        installed = []

        def stopped(signum: int) -> None:
            if not stop.is_set():
                self._signal_received(signal.Signals(signum).name)
                if starting and task is not None:
                    task.cancel()  # stop starting (a startup hook may wait for another service)
            stop.set()

        for signum in signals:
            try:
                loop.add_signal_handler(signum, stopped, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            try:
                await self.start()
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise
                if sys.version_info >= (3, 11) and task is not None:
                    task.uncancel()
                return
            finally:
                starting = False
            try:
                await stop.wait()
            finally:
                await self.aclose()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
