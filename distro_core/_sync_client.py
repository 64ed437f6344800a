"""The blocking client (:class:`SyncClient`): a :class:`~distro_core.Client` run on a private
event loop in a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ._client import Client
from ._exceptions import StateError
from ._message import Message
from ._stats import ClientStats

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    """A blocking client for scripts: the same as :class:`Client`, run on a private event loop
    in a background thread, so it works whether or not the calling thread runs a loop.

    Use it as ``with factory.sync_client(...) as client:``.
    """

    def __init__(self, make_client: Callable[[], Client]) -> None:
        self._make_client = make_client
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None:
            coro.close()
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def open(self) -> None:
        """Start the background loop and open the link.

        :raises ConnectionError: the server cannot be reached.
        """
        if self._loop is not None:
            raise StateError("sync client already open")
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="distro-sync-client", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        self._client = self._make_client()
        try:
            self._run(self._client.open())
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the link and stop the background loop. Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            loop.close()

    def send(self, msg: Message, *, confirm: bool = False, timeout: float = 5.0) -> None:
        """Send ``msg`` one way, or with ``confirm=True`` wait until the server confirms it;
        see :meth:`Client.send`."""
        if self._client is None:
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        self._run(self._client.send(msg, confirm=confirm, timeout=timeout))

    @property
    def stats(self) -> ClientStats:
        """The counters of the client underneath (see :class:`Client`)."""
        if self._client is None:
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        return self._client.stats

    def request(self, msg: Message, timeout: float = 5.0) -> Message:
        """Send a request and wait for its reply; see :meth:`Client.request`."""
        if self._client is None:
            raise StateError("sync client is not open; use 'with factory.sync_client()'")
        return self._run(self._client.request(msg, timeout))

    def __enter__(self) -> SyncClient:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
