"""The :class:`Service`: a server's handlers, the clients it calls and its startup and shutdown
hooks, bound to a transport only when it is served (``await service.serve("tcp", port=8001)``
or ``distro run app:service --transport tcp --option port=8001``)."""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, overload

from ._client import Client
from ._exceptions import StateError
from ._factory import _SERVER_OPTIONS, Factory, create
from ._handlers import F, HandlerTable, entry
from ._lifecycle import Lifecycle
from ._logging import Log, check_logger
from ._loops import LoopName, loop_factory
from ._message import Message
from ._server import Server

__all__ = ["Hook", "Service"]

Hook = Callable[[], "Awaitable[None] | None"]
"""A startup or shutdown hook: a plain or an async function of no arguments."""

H = TypeVar("H", bound=Hook)

CLIENT_EXCLUDED = frozenset({"port", "reuse_port", "group", *_SERVER_OPTIONS})
"""Served options a client made by :meth:`Service.connect` does not inherit: they say where
and how this service listens, not how to reach another one."""


class _State(enum.Enum):
    UNBOUND = "unbound"
    BOUND = "bound"
    STARTING = "starting"
    OPEN = "open"
    CLOSED = "closed"


class Service(HandlerTable, Lifecycle):
    """A service: handlers like a server's, the clients it calls, and hooks that run after the
    server binds and after it drains. It is bound to a transport when served, so the same code
    runs over tcp, redis or memory; the transport and its options come from :meth:`serve` (or
    from ``distro run``'s ``--transport`` and ``--option``), falling back to those given here.

    Register handlers with :meth:`post`, :meth:`get` and the other verbs, or :meth:`receive`,
    as on a :class:`~distro_core.Server`. Hooks (plain or async functions of no arguments)::

        @service.on_startup          # the server listens; open the clients you call
        async def open_clients(): ...

        @service.on_shutdown         # the server drained: no handler runs any more
        async def close_things(): ...

    Startup hooks run in order after the server started; messages that arrive meanwhile wait
    for them (their handlers run once the hooks finished). If one raises, the server closes, the
    clients of :meth:`connect` close and the error propagates (no shutdown hook runs).
    Shutdown hooks run in reverse order once the server drained; one that raises is logged
    and the others still run. Clients opened with :meth:`connect` close after them.

    Serve it with ``await service.serve(transport, **options)`` (until SIGINT or SIGTERM),
    ``service.run(transport, **options)`` from blocking code, or ``service.bind(transport,
    **options)`` then ``async with service:``.

    :param name: the service's name, in its log lines (and the default group of ``distro run
        --workers`` over brokers).
    :param transport: the transport name used when :meth:`serve` gives none.
    :param logger: as for :func:`~distro_core.create`.
    :param options: default server options (transport options such as ``port``, and the
        server's own such as ``max_concurrency``); those given to :meth:`serve` win.
    """

    def __init__(
        self,
        name: str = "service",
        *,
        transport: str | None = None,
        logger: Any = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a service's name must be a non-empty string, got {name!r}")
        super().__init__()
        self.name = name
        self.transport = transport
        self.options: dict[str, Any] = dict(options)
        """The default server options."""
        self._logger = check_logger(logger)
        self._log = Log(self._logger, service=name)
        self._registrations: list[tuple[str | None, str, Any, float | None]] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._clients: list[Client] = []
        self._factory: Factory | None = None
        self._server: Server | None = None
        self._served: dict[str, Any] = {}
        self._state = _State.UNBOUND
        self._ready = asyncio.Event()

    # -- registration -----------------------------------------------------------------------

    def receive(self, handler: F, *, timeout: float | None = None) -> F:
        """Register ``handler`` for every message (see :meth:`Server.receive`)."""
        super().receive(handler, timeout=timeout)
        self._registrations.append((None, "", handler, timeout))
        if self._server is not None:
            self._add(self._server, None, "", handler, timeout)
        return handler

    @overload
    def route(self, verb: str, uri: str, *, timeout: float | None = None) -> Callable[[F], F]: ...
    @overload
    def route(self, verb: str, uri: str, handler: F, *, timeout: float | None = None) -> F: ...

    def route(
        self, verb: str, uri: str, handler: F | None = None, *, timeout: float | None = None
    ) -> F | Callable[[F], F]:
        """Register ``handler`` for ``verb`` and the uri pattern ``uri`` (see
        :meth:`Server.route`); without ``handler``, return a decorator."""
        if handler is None:
            return lambda fn: self.route(verb, uri, fn, timeout=timeout)
        super().route(verb, uri, handler, timeout=timeout)
        self._registrations.append((verb, uri, handler, timeout))
        if self._server is not None:
            self._add(self._server, verb, uri, handler, timeout)
        return handler

    def _add(
        self, server: Server, verb: str | None, uri: str, handler: Any, timeout: float | None
    ) -> None:
        held = self._held(handler)
        if verb is None:
            server.receive(held, timeout=timeout)
        else:
            server.route(verb, uri, held, timeout=timeout)

    def _held(self, handler: Any) -> Any:
        """``handler``, made to wait until the startup hooks finished: a message that comes
        while they run (the server listens already) waits for them, so that handlers find
        the clients the hooks open."""
        ready = self._ready
        if entry(handler).is_async:

            @functools.wraps(handler)
            async def held_async(msg: Message) -> Any:
                if not ready.is_set():
                    await ready.wait()
                return await handler(msg)

            return held_async

        async def later(msg: Message) -> Any:
            await ready.wait()
            result = handler(msg)
            return (await result) if inspect.isawaitable(result) else result

        @functools.wraps(handler)
        def held(msg: Message) -> Any:
            if ready.is_set():
                return handler(msg)
            return later(msg)  # a plain handler may return an awaitable: the server awaits it

        return held

    def on_startup(self, hook: H) -> H:
        """Register a hook run once the server listens (in registration order); a decorator."""
        self._startup.append(_check_hook(hook))
        return hook

    def on_shutdown(self, hook: H) -> H:
        """Register a hook run once the server drained (in reverse order); a decorator."""
        self._shutdown.append(_check_hook(hook))
        return hook

    # -- binding ----------------------------------------------------------------------------

    def bind(self, transport: str | None = None, /, **options: Any) -> Server:
        """Make the server over ``transport`` (the name given to the constructor if None) with
        the constructor's options updated by ``options``; it is not started.

        :returns: the server, with this service's handlers.
        :raises StateError: the service was already started, or no transport is named.
        :raises TransportNotFound: no such transport.
        :raises TypeError, ValueError: an option the transport does not take, a bad value.
        """
        if self._state not in (_State.UNBOUND, _State.BOUND):
            raise StateError(f"service {self.name!r} is {self._state.value}; it binds only once")
        name = transport or self.transport
        if name is None:
            raise StateError(
                f"service {self.name!r} has no transport: serve(transport) or "
                "distro run --transport NAME"
            )
        factory = create(name, self._logger)
        served = {**self.options, **options}
        server = factory.server(served)
        for verb, uri, handler, timeout in self._registrations:
            self._add(server, verb, uri, handler, timeout)
        self._factory, self._server, self._served = factory, server, served
        self._state = _State.BOUND
        return server

    @property
    def factory(self) -> Factory:
        """The factory of the transport the service is bound to, for the clients it makes.

        :raises StateError: the service is not bound yet.
        """
        if self._factory is None:
            raise StateError(f"service {self.name!r} is not bound to a transport yet")
        return self._factory

    @property
    def server(self) -> Server:
        """The server, once bound.

        :raises StateError: the service is not bound yet.
        """
        if self._server is None:
            raise StateError(f"service {self.name!r} is not bound to a transport yet")
        return self._server

    @property
    def address(self) -> tuple[str, int]:
        """Where the service listens, once started (see :attr:`Server.address`)."""
        return self.server.address

    @property
    def is_serving(self) -> bool:
        """True while the server serves: from the moment it is bound (:attr:`address` is
        known) until it closes."""
        server = self._server
        if server is None or not server.is_serving:
            return False
        try:
            server.address  # noqa: B018 - unknown while the transport is still binding
        except StateError:
            return False
        return True

    async def connect(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> Client:
        """Open a client over the service's transport, closed after the shutdown hooks.

        It takes the served options that say how to reach the transport (a redis ``url`` and
        ``prefix``, tcp time-outs...), not those that say where this service listens (``port``,
        ``reuse_port``, ``group``, the server's own options); ``options`` add to them and win
        (``port=8001`` for another service's port, ``servers=[...]`` for its replicas).

        :raises StateError: the service is not bound.
        :raises ConnectionError: the server cannot be reached within the transport's
            ``connect_timeout``.
        """
        inherited = {k: v for k, v in self._served.items() if k not in CLIENT_EXCLUDED}
        if "servers" in options or (info and "servers" in info):
            inherited.pop("address", None)
        given = {**(info or {}), **options}
        client = self.factory.client({**inherited, **given})
        await client.open()
        self._clients.append(client)
        return client

    # -- the lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server (binding it to the default transport if :meth:`bind` was not
        called), then run the startup hooks.

        :raises StateError: already started.
        :raises AddressInUse: the address is taken.
        """
        server = self._server if self._server is not None and self._state is _State.BOUND else None
        if server is None:
            server = self.bind()
        self._state = _State.STARTING
        try:
            await server.start()
        except BaseException:
            self._state = _State.CLOSED
            raise
        ran = 0
        try:
            for hook in self._startup:
                await _call(hook)
                ran += 1
        except BaseException as exc:
            self._log.log(
                logging.ERROR,
                "distro service %s: startup hook %s failed; closing",
                self.name,
                _name(self._startup[ran]),
                exc_info=exc,
                extra={"event": "startup_failed", "transport": self.factory.name},
            )
            await self._stop(server, [])
            raise
        self._state = _State.OPEN
        self._ready.set()
        host, port = server.address
        self._log.log(
            logging.INFO,
            "distro service %s: ready on %s %s:%s",
            self.name,
            self.factory.name,
            host,
            port,
            extra={"event": "ready", "transport": self.factory.name, "port": port},
        )

    async def aclose(self) -> None:
        """Close the server gracefully (it drains), run the shutdown hooks, close the clients
        of :meth:`connect`. Idempotent."""
        if self._state is not _State.OPEN:
            if self._state is not _State.STARTING:
                self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        assert self._server is not None
        await self._stop(self._server, self._shutdown)

    async def _stop(self, server: Server, hooks: list[Hook]) -> None:
        self._state = _State.CLOSED
        try:
            await server.aclose()
        finally:
            for hook in reversed(hooks):
                try:
                    await _call(hook)
                except Exception as exc:
                    self._log.log(
                        logging.ERROR,
                        "distro service %s: shutdown hook %s failed",
                        self.name,
                        _name(hook),
                        exc_info=exc,
                        extra={"event": "shutdown_failed", "transport": server.transport.name},
                    )
            clients, self._clients = self._clients, []
            for client in reversed(clients):
                await client.aclose()

    def _signal_received(self, name: str) -> None:
        self._log.log(
            logging.INFO,
            "distro service %s: %s received, closing gracefully",
            self.name,
            name,
            extra={"event": "signal", "signal": name, "transport": self.factory.name},
        )

    async def serve(self, transport: str | None = None, /, **options: Any) -> None:
        """Bind to ``transport`` with ``options`` (see :meth:`bind`), start, serve until SIGINT
        or SIGTERM, then close gracefully (see :meth:`aclose`)."""
        self.bind(transport, **options)
        await self.serve_until_signalled()

    def run(
        self, transport: str | None = None, /, *, loop: LoopName = "asyncio", **options: Any
    ) -> None:
        """:meth:`serve` from blocking code: blocks until SIGINT or SIGTERM.

        :param loop: the event loop to serve on, as for :meth:`Server.run
            <distro_core.Server.run>`: ``"asyncio"``, ``"uvloop"`` or ``"auto"``.
        :raises StateError: called from inside a running event loop (use :meth:`serve`).
        :raises ImportError: ``loop="uvloop"`` and uvloop is not installed.
        """
        loop_factory(loop)  # a bad or missing loop is said before anything is bound
        self.bind(transport, **options)
        super().run(loop=loop)

    def __repr__(self) -> str:
        where = f" on {self._factory.name}" if self._factory is not None else ""
        return f"<distro.Service {self.name!r}{where} {self._state.value}>"


def _check_hook(hook: object) -> Hook:
    if not callable(hook):
        raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
    return hook


async def _call(hook: Hook) -> None:
    result = hook()
    if inspect.isawaitable(result):
        await result


def _name(hook: Hook) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)
