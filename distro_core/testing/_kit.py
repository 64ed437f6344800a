"""Testing one's own services: a fresh in-memory network per test and an in-process test client.

The ``distro_test`` pytest fixture (``distro_core.testing.plugin``) gives each test a
:class:`DistroTest`: its own :class:`~distro_core.MemoryNetwork`, a factory of servers and
clients on it that records every message its clients send (what the handlers under test sent to
other services), and :meth:`DistroTest.client`, a :class:`TestClient` that calls a server's
routes through the real routing and handler code, over the memory transport. See
docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from .._client import Client
from .._exceptions import StateError
from .._factory import Factory, create
from .._message import Message, message
from .._server import Server
from .._service import Service
from .._sync_client import SyncClient
from .._transport import ClientReceiver, Connection
from .._transports.memory import MemoryNetwork, MemoryTransport

__all__ = ["DistroTest", "TestClient"]


class _RecordingConnection(Connection):
    """A client's link that appends each message it sent (once sent) to a list."""

    def __init__(self, inner: Connection, sent: list[Message]) -> None:
        self._inner = inner
        self._sent = sent
        self.reply_to = inner.reply_to

    async def send(self, data: bytes, message: Message) -> None:
        await self._inner.send(data, message)
        self._sent.append(message)

    async def request(self, data: bytes, message: Message) -> None:
        await self._inner.request(data, message)
        self._sent.append(message)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _recording_transport(sent: list[Message]) -> type[MemoryTransport]:
    """The memory transport, with clients whose links record what they send into ``sent``."""

    class RecordingMemoryTransport(MemoryTransport):
        """The memory transport; its clients record every message they send."""

        async def connect(
            self, receiver: ClientReceiver, target: tuple[str, int] | None = None
        ) -> Connection:
            conn = await super().connect(receiver, target)
            if target is not None:  # a server's RECEIVED acknowledgement, not a client's send
                return conn
            return _RecordingConnection(conn, sent)

    return RecordingMemoryTransport


class _TestFactory(Factory):
    """A memory factory whose servers and clients use one network (unless told another) and
    whose clients record what they send."""

    def __init__(self, network: MemoryNetwork, sent: list[Message]) -> None:
        super().__init__(_recording_transport(sent), create("memory").logger)
        self._network = network

    def bind(self, service: Service) -> None:
        """Bind ``service`` (not yet bound) to this factory's transport, on the test's network,
        on a free port: the clients of its ``connect`` record what they send too."""
        transport: Any = self.transport  # Service.bind names a transport; create() takes a class
        service.bind(transport, network=self._network, port=0)

    def _on_network(
        self, info: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        merged = {**(info or {}), **options}
        merged.setdefault("network", self._network)
        return merged

    def server(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> Server:
        """Make a memory server on the test's network (see :meth:`Factory.server`)."""
        return super().server(self._on_network(info, options))

    def client(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> Client:
        """Make a memory client on the test's network whose sends are recorded in
        :attr:`DistroTest.sent` (see :meth:`Factory.client`)."""
        return super().client(self._on_network(info, options))

    def sync_client(self, info: Mapping[str, Any] | None = None, /, **options: Any) -> SyncClient:
        """Make a blocking memory client on the test's network (see :meth:`Factory.sync_client`);
        its sends are recorded too."""
        return super().sync_client(self._on_network(info, options))


class DistroTest:
    """One test's distro world (the ``distro_test`` fixture): a fresh in-memory network, a
    factory on it, and test clients for servers.

    :ivar network: the test's own :class:`~distro_core.MemoryNetwork`; nothing from another
        test is bound in it.
    :ivar factory: a ``memory`` :class:`~distro_core.Factory` whose servers and clients use
        :attr:`network`; hand it to the code that builds your services. Its clients record
        every message they send in :attr:`sent`.
    :ivar sent: every message a client of :attr:`factory` sent (``send``, ``request``,
        confirmed sends), in the order they were sent: what the code under test sent to other
        services. Test clients' own calls are not in it.
    """

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self) -> None:
        self.network = MemoryNetwork()
        self.sent: list[Message] = []
        self.factory: Factory = _TestFactory(self.network, self.sent)

    def client(self, server: Server | Service, *, timeout: float = 5.0) -> TestClient:
        """A :class:`TestClient` for ``server`` (use it as ``async with``): a memory
        :class:`~distro_core.Server`, or a :class:`~distro_core.Service`, which a service not
        yet bound is bound to the test's network for (on a free port, its clients recorded in
        :attr:`sent`).

        :param timeout: the default time-out of its calls, in seconds.
        """
        if isinstance(server, Service) and not _bound(server):
            factory = self.factory
            assert isinstance(factory, _TestFactory)
            factory.bind(server)
        return TestClient(server, timeout=timeout)

    def sent_to(self, uri: str | None = None, verb: str | None = None) -> list[Message]:
        """The messages in :attr:`sent` whose uri is ``uri`` (ignoring case) and whose verb is
        ``verb`` (a message without a verb is a GET), when given."""
        return [
            m
            for m in self.sent
            if (uri is None or m.uri.lower() == uri.lower())
            and (verb is None or (m.verb or "GET") == verb.upper())
        ]


def _bound(service: Service) -> bool:
    try:
        service.server  # noqa: B018 - raises StateError until bound
    except StateError:
        return False
    return True


class TestClient:
    """Calls a server's routes in-process: the message goes through the server's real
    routing and handlers (``msg.params`` filled from the uri pattern, catch-alls, typed
    payloads, errors as a remote caller sees them), over the memory transport.

    ``async with TestClient(server) as client:`` starts the server if it is not serving yet
    (and closes it on the way out, then); the server must be a ``memory`` one (made from
    :attr:`DistroTest.factory`, or any memory factory). It takes a
    :class:`~distro_core.Service` as well: one not yet bound is bound to ``memory`` on a free
    port (:meth:`DistroTest.client` binds it to the test's network), and starting it runs its
    startup hooks, closing it its shutdown hooks.

    :param timeout: the default time-out of :meth:`request` and :meth:`send`, in seconds.
    """

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def __init__(self, server: Server | Service, *, timeout: float = 5.0) -> None:
        if isinstance(server, Service) and not _bound(server):
            server.bind("memory", port=0)
        inner = server.server if isinstance(server, Service) else server
        if not isinstance(inner.transport, MemoryTransport):
            raise TypeError(
                f"TestClient calls a memory server; this one is {inner.transport.name!r}: make "
                "it from the distro_test fixture's factory (or distro.create('memory'))"
            )
        self.server: Server | Service = server
        self._inner = inner
        self.timeout = timeout
        self._started = False
        self._client: Client | None = None

    async def __aenter__(self) -> TestClient:
        if not self.server.is_serving:
            await self.server.start()
            self._started = True
        transport = self._inner.transport
        assert isinstance(transport, MemoryTransport)
        factory = create("memory")
        self._client = factory.client(port=self._inner.address[1], network=transport.network)
        try:
            await self._client.open()
        except BaseException:
            await self._close_server()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._client is not None:
                await self._client.aclose()
        finally:
            await self._close_server()

    async def _close_server(self) -> None:
        if self._started:
            self._started = False
            await self.server.aclose()

    def _message(
        self,
        target: str | Message,
        payload: Any,
        verb: str | None,
        headers: Mapping[str, Any] | None,
    ) -> Message:
        if isinstance(target, Message):
            if payload is not None or verb is not None or headers:
                raise TypeError("give a Message alone, or a uri with payload, verb and headers")
            return target
        fields: dict[str, Any] = {**(headers or {}), "uri": target}
        if verb is not None:
            fields["verb"] = verb
        return message(fields, payload)

    def _open(self) -> Client:
        if self._client is None:
            raise RuntimeError("use the TestClient as `async with client:` first")
        return self._client

    async def request(
        self,
        target: str | Message,
        payload: Any = None,
        *,
        verb: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Send a request (a uri with an optional payload, verb (GET by default) and more
        headers, or a ready :class:`~distro_core.Message`) and return the reply message.

        :raises RemoteError: a handler raised, or no handler took it (``code``: see
            docs/wire-format.md).
        :raises RequestTimeout: no reply within ``timeout``.
        """
        msg = self._message(target, payload, verb, headers)
        reply: Message = await self._open().request(msg, timeout=timeout or self.timeout)
        return reply

    async def send(
        self,
        target: str | Message,
        payload: Any = None,
        *,
        verb: str | None = None,
        headers: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send a one-way message and return once the server's handlers have finished with it
        (a confirmed send: ``client.send(msg, confirm=True)``), so a test can check their
        effects at once.

        :raises RemoteError: a handler raised, or no handler took it.
        :raises RequestTimeout: the handlers did not finish within ``timeout``.
        """
        msg = self._message(target, payload, verb, headers)
        await self._open().send(msg, confirm=True, timeout=timeout or self.timeout)
