"""The behavioural suite every transport passes (see the package docstring)."""

from __future__ import annotations

import ast
import asyncio
import math
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import attrs
import pytest

import distro_core as distro
from distro_core import transport as kit

from ._helpers import Recorder, wait_until

__all__ = ["TransportSuite"]

_STORES = (
    "over {} a confirmed send means the broker stored it (Connection.store), not that a "
    "handler ran: {} check that"
)
_LABELS = {"request_reply": "request/reply", "ordered": "ordering"}
"""How a skip names a capability the transport lacks."""

_HANDLED = (
    "{} declares no durable store: a confirmed send means a server handled it (the tests "
    "above check that)"
)


@pytest.mark.distro_async
class TransportSuite:
    """Subclass this in a test module and set :attr:`transport` (or override :meth:`factory`).

    :cvar transport: the transport's registered name, or its :class:`~distro_core.Transport`
        subclass.
    :cvar foreign_ack_address: an address that is not the client's own, to check that RECEIVED
        is not sent to third parties by default (never contacted by a correct server).
    """

    transport: ClassVar[str | type[kit.Transport]]
    foreign_ack_address: ClassVar[str] = "127.0.0.2"

    # -- configuration a transport's test class may override ------------------------------

    @pytest.fixture
    def factory(self) -> distro.Factory:
        """The factory under test; override to parametrize over several transports."""
        return distro.create(self.transport)

    def server_options(self, factory: distro.Factory) -> dict[str, Any]:
        """Options for a test server: an ephemeral port on the default address."""
        return {"port": 0}

    def client_options(self, factory: distro.Factory, server: distro.Server) -> dict[str, Any]:
        """Options for a client of ``server``: its address and port."""
        address, port = server.address
        return {"address": address, "port": port}

    def ack_address(self, factory: distro.Factory, server: distro.Server) -> dict[str, Any]:
        """Headers that make a message's RECEIVED go to ``server`` (``address`` and ``port``)."""
        address, port = server.address
        return {"address": address, "port": port}

    # -- helpers --------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(
        self, factory: distro.Factory, server: distro.Server | None = None, **options: Any
    ) -> AsyncIterator[tuple[distro.Server, distro.Client]]:
        """Start ``server`` (or a fresh one) and open a client to it."""
        if server is None:
            server = factory.server(self.server_options(factory), **options)
        async with server, factory.client(self.client_options(factory, server)) as client:
            yield server, client

    @staticmethod
    def caps(factory: distro.Factory) -> kit.Capabilities:
        """The capabilities of the transport under test."""
        return factory.transport.capabilities

    @staticmethod
    def require(factory: distro.Factory, capability: str) -> None:
        """Skip the test unless the transport declares ``capability`` (a
        :class:`~distro_core.transport.Capabilities` flag), saying which it lacks."""
        if not getattr(factory.transport.capabilities, capability):
            pytest.skip(f"{factory.name} declares no {_LABELS.get(capability, capability)}")

    @staticmethod
    def stores(client: distro.Client) -> bool:
        """Whether ``client``'s confirmed sends mean "the broker stored it" (a durable transport
        whose connection implements :meth:`~distro_core.transport.Connection.store`) rather
        than "a server's handlers finished"; the confirmed-send tests check whichever holds."""
        return client.confirms == "stored"

    def room(self, factory: distro.Factory) -> Any:
        """The payload of a request whose error text a test reads. Where source addresses can
        be forged (the transport is not ``reliable``) a server cuts an error reply to the size
        of the request that asked (no amplification, docs/security.md): such requests carry
        room for the whole text."""
        return None if self.caps(factory).reliable else "." * 400

    # -- one-way messages and routing -----------------------------------------------------

    async def test_send_reaches_the_matching_handler(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/customer/{id}", got)
        async with self.serving(factory, server) as (_, client):
            sent = distro.message({"uri": "/customer/Ab7", "verb": "POST"}, {"total": 12})
            await client.send(sent)
            [msg] = await got.wait_for(1)
        assert msg == sent
        assert msg.params == {"id": "Ab7"}
        assert msg.payload == {"total": 12}

    async def test_uri_ignores_case_and_a_missing_verb_means_get(
        self, factory: distro.Factory
    ) -> None:
        server = factory.server(self.server_options(factory))
        gets, deletes = Recorder(), Recorder()
        server.get("/Orders/{n}/Lines", gets)
        server.delete("/orders/{n}/lines", deletes)
        async with self.serving(factory, server) as (_, client):
            await client.send(distro.message({"uri": "/ORDERS/5/lines"}, 1))
            await client.send(distro.message({"uri": "/orders/6/LINES", "verb": "delete"}, 2))
            await client.send(distro.message({"uri": "/orders/7/lines", "verb": "GET"}, 3))
            await gets.wait_for(2)
            await deletes.wait_for(1)
        assert sorted(gets.payloads) == [1, 3]  # type: ignore[type-var]
        assert deletes.payloads == [2]
        assert deletes.messages[0].params == {"n": "6"}

    async def test_every_handler_on_a_route_runs_in_order_and_catch_all_sees_all(
        self, factory: distro.Factory
    ) -> None:
        server = factory.server(self.server_options(factory))
        calls: list[str] = []
        everything = Recorder()
        server.receive(everything)
        server.put("/a", lambda m: calls.append("first"))

        @server.put("/a")
        async def second(msg: distro.Message) -> None:
            calls.append("second")

        server.put("/a", lambda m: calls.append("third"))
        async with self.serving(factory, server) as (_, client):
            await client.send(distro.message({"uri": "/a", "verb": "PUT"}))
            await client.send(distro.message({"uri": "/unrouted", "verb": "PATCH"}))
            await everything.wait_for(2)
            await wait_until(lambda: len(calls) == 3, what="three handlers")
        assert calls == ["first", "second", "third"]
        assert {m.uri for m in everything.messages} == {"/a", "/unrouted"}

    async def test_messages_from_one_client_arrive_in_order(self, factory: distro.Factory) -> None:
        self.require(factory, "ordered")
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/seq", got)
        async with self.serving(factory, server) as (_, client):
            for i in range(300):
                await client.send(distro.message({"uri": "/seq", "verb": "POST"}, i))
            await got.wait_for(300, timeout=10)
        assert got.payloads == list(range(300))

    async def test_many_messages_are_all_delivered(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/bulk", got)
        count = 500
        async with self.serving(factory, server) as (_, client):
            for i in range(count):
                await client.send(distro.message({"uri": "/bulk", "verb": "POST"}, {"n": i}))
                if i % 50 == 49:
                    # Give a datagram receiver the chance to keep up (loopback buffers are finite).
                    await got.wait_for(i + 1 if self.caps(factory).reliable else 0, timeout=10)
            if self.caps(factory).reliable:
                await got.wait_for(count, timeout=10)
        assert {p["n"] for p in got.payloads} <= set(range(count))  # type: ignore[index]
        if self.caps(factory).reliable:
            assert len(got.payloads) == count

    # -- sending many without waiting (send_nowait and drain) -----------------------------

    def nowait_count(self, factory: distro.Factory) -> int:
        """How many messages the send_nowait tests send: fewer where datagrams may be lost
        under a flood (not ``reliable``), so that most of them still arrive."""
        return 400 if self.caps(factory).reliable else 200

    async def test_send_nowait_messages_arrive_and_are_counted_after_drain(
        self, factory: distro.Factory
    ) -> None:
        caps = self.caps(factory)
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/nowait", got)
        count = self.nowait_count(factory)
        async with self.serving(factory, server) as (_, client):
            for i in range(count):
                client.send_nowait(distro.message({"uri": "/nowait", "verb": "POST"}, i))
                if i % 16 == 15:
                    await asyncio.wait_for(client.drain(), 15)
                    if not caps.reliable:
                        await asyncio.sleep(0)  # a yield: let the receiver read its socket
            await asyncio.wait_for(client.drain(), 15)
            # Once drain() returned, every message was handed to the transport and counted.
            assert client.stats.sent == count
            await got.wait_for(count if caps.reliable else 1, timeout=15)
        payloads: list[Any] = got.payloads
        assert len(set(payloads)) == len(payloads), "a message arrived twice"
        assert set(payloads) <= set(range(count))
        if caps.reliable:
            assert len(payloads) == count
        if caps.ordered:
            assert payloads == sorted(payloads), "send_nowait changed the order"

    async def test_send_nowait_and_send_mixed_keep_their_order(
        self, factory: distro.Factory
    ) -> None:
        caps = self.caps(factory)
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/mixed", got)
        count = 90
        async with self.serving(factory, server) as (_, client):
            for i in range(count):
                msg = distro.message({"uri": "/mixed", "verb": "POST"}, i)
                if i % 3 == 2:
                    await client.send(msg)  # after what send_nowait queued before it
                else:
                    client.send_nowait(msg)
            await asyncio.wait_for(client.drain(), 15)
            assert client.stats.sent == count
            await got.wait_for(count if caps.reliable else 1, timeout=15)
        payloads: list[Any] = got.payloads
        if caps.reliable:
            assert sorted(payloads) == list(range(count))
        if caps.ordered:
            assert payloads == list(range(count))
        else:
            assert set(payloads) <= set(range(count))

    async def test_drain_with_nothing_queued_returns_at_once(self, factory: distro.Factory) -> None:
        def at_once(waiting: Any) -> None:
            # Driven by hand, without the loop: a drain that had to wait would yield here.
            with pytest.raises(StopIteration):
                waiting.send(None)

        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/idle", got)
        async with self.serving(factory, server) as (_, client):
            at_once(client.drain())  # nothing was ever sent
            client.send_nowait(distro.message({"uri": "/idle", "verb": "POST"}, 1))
            await asyncio.wait_for(client.drain(), 15)
            at_once(client.drain())  # everything already went
            await client.send(distro.message({"uri": "/idle", "verb": "POST"}, 2))
            at_once(client.drain())
            await got.wait_for(2 if self.caps(factory).reliable else 1, timeout=10)
        assert client.stats.sent == 2

    async def test_send_nowait_on_a_client_not_open_raises_state_error(
        self, factory: distro.Factory
    ) -> None:
        msg = distro.message({"uri": "/closed", "verb": "POST"})
        async with self.serving(factory) as (server, client):
            unopened = factory.client(self.client_options(factory, server))
            with pytest.raises(distro.StateError):
                unopened.send_nowait(msg)
        with pytest.raises(distro.StateError):
            client.send_nowait(msg)
        assert client.stats.sent == unopened.stats.sent == 0

    async def test_send_nowait_takes_only_messages(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/typed", got)
        async with self.serving(factory, server) as (_, client):
            for wrong in ({"uri": "/typed", "verb": "POST"}, b'{"uri":"/typed"}', None):
                with pytest.raises(TypeError, match="Message"):
                    client.send_nowait(wrong)  # type: ignore[arg-type]
            await asyncio.wait_for(client.drain(), 15)
            assert client.stats.sent == 0
            client.send_nowait(distro.message({"uri": "/typed", "verb": "POST"}, "ok"))
            await asyncio.wait_for(client.drain(), 15)
            await got.wait_for(1)
        assert got.payloads == ["ok"]

    async def test_send_nowait_raises_message_too_large_at_once(
        self, factory: distro.Factory
    ) -> None:
        limit = self.caps(factory).max_message_size
        if limit is None:
            pytest.skip(f"{factory.name} declares no message size limit")
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/big", got)
        async with self.serving(factory, server) as (_, client):
            room = limit - len(distro.message({"uri": "/big", "verb": "POST"}, "").to_bytes())
            too_big = distro.message({"uri": "/big", "verb": "POST"}, "z" * (room + 1))
            with pytest.raises(distro.MessageTooLarge) as info:
                client.send_nowait(too_big)  # raised here, not by a later drain()
            assert info.value.limit == limit
            await asyncio.wait_for(client.drain(), 15)  # nothing was queued: nothing to raise
            assert client.stats.sent == 0
            client.send_nowait(distro.message({"uri": "/big", "verb": "POST"}, "small"))
            await asyncio.wait_for(client.drain(), 15)
            [msg] = await got.wait_for(1)
        assert msg.payload == "small"

    async def test_unicode_big_integers_and_nesting_survive(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/data", got)
        payload = {
            "name": "Zoë 東京 🚀",
            "big": 2**100,
            "neg": -(2**70),
            "x": 1.5,
            "n": None,
            "deep": [[[{"k": [True, False]}]]],
            "empty": {},
        }
        async with self.serving(factory, server) as (_, client):
            await client.send(
                distro.message({"uri": "/data", "verb": "POST", "x-trace": "t1"}, payload)
            )
            [msg] = await got.wait_for(1)
        assert msg.payload == payload
        assert msg.headers["x-trace"] == "t1"

    # -- request/reply --------------------------------------------------------------------

    async def test_request_gets_the_handlers_return_value(self, factory: distro.Factory) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        totals: dict[str, int] = {}

        @server.post("/customer/{id}")
        async def update(msg: distro.Message) -> None:
            totals[msg.params["id"]] = msg.payload["total"]

        @server.get("/customer/{id}")
        def read(msg: distro.Message) -> dict[str, Any]:
            return {"id": msg.params["id"], "total": totals.get(msg.params["id"], 0)}

        async with self.serving(factory, server) as (_, client):
            await client.send(distro.message({"uri": "/customer/7", "verb": "POST"}, {"total": 12}))
            reply = await client.request(
                distro.message({"uri": "/customer/7", "verb": "GET"}), timeout=5.0
            )
        assert reply.payload == {"id": "7", "total": 12}
        assert server.stats.replies_sent == 1

    async def test_concurrent_requests_each_get_their_own_reply(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))

        @server.get("/square/{n}")
        async def square(msg: distro.Message) -> int:
            await asyncio.sleep(0)
            return int(msg.params["n"]) ** 2

        async with self.serving(factory, server) as (_, client):
            replies = await asyncio.gather(
                *(
                    client.request(distro.message({"uri": f"/square/{n}"}), timeout=10)
                    for n in range(64)
                )
            )
        assert [r.payload for r in replies] == [n * n for n in range(64)]

    async def test_a_raising_handler_gives_remote_error_and_the_server_goes_on(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))

        @server.get("/boom")
        def boom(msg: distro.Message) -> None:
            raise KeyError("no such customer")

        @server.get("/refuse")
        def refuse(msg: distro.Message) -> None:
            raise distro.Reject("not_found", "no such customer", {"id": 7})

        server.get("/ok", lambda m: "fine")
        async with self.serving(factory, server) as (_, client):
            with pytest.raises(distro.RemoteError) as info:
                await client.request(
                    distro.message({"uri": "/boom"}, self.room(factory)), timeout=5
                )
            # An unexpected exception: the caller learns that, not the server's internals.
            assert info.value.code == "handler_error"
            assert "no such customer" not in info.value.remote
            assert "internal error" in info.value.remote
            with pytest.raises(distro.RemoteError) as info:
                await client.request(
                    distro.message({"uri": "/refuse"}, self.room(factory)), timeout=5
                )
            error = info.value  # an expected failure, as the handler said it
            assert (error.code, error.remote, error.details) == (
                "not_found",
                "no such customer",
                {"id": 7},
            )
            reply = await client.request(distro.message({"uri": "/ok"}), timeout=5)
        assert reply.payload == "fine"
        assert server.stats.handler_errors == 1 and server.stats.rejected == 1

    async def test_a_request_nobody_handles_gets_an_error_reply(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        server.get("/known", lambda m: 1)
        async with self.serving(factory, server) as (_, client):
            with pytest.raises(distro.RemoteError, match="no handler for DELETE /unknown"):
                await client.request(
                    distro.message({"uri": "/unknown", "verb": "DELETE"}), timeout=5
                )

    async def test_a_handler_returning_a_non_json_value_gives_remote_error(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        server.get("/odd", lambda m: {1, 2})
        async with self.serving(factory, server) as (_, client):
            with pytest.raises(distro.RemoteError, match="cannot be sent"):
                await client.request(distro.message({"uri": "/odd"}, self.room(factory)), timeout=5)

    async def test_a_request_without_reply_times_out(self, factory: distro.Factory) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory), close_timeout=0.2)
        release = asyncio.Event()

        @server.get("/slow")
        async def slow(msg: distro.Message) -> str:
            await release.wait()
            return "late"

        async with self.serving(factory, server) as (_, client):
            with pytest.raises(distro.RequestTimeout) as info:
                await client.request(distro.message({"uri": "/slow"}), timeout=0.2)
            assert isinstance(info.value, TimeoutError)

    async def test_request_reply_with_sync_client_from_another_thread(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/note", got)
        server.get("/echo/{word}", lambda m: m.params["word"].upper())
        async with server:
            options = self.client_options(factory, server)

            def blocking() -> Any:
                with factory.sync_client(options) as sync:
                    sync.send(distro.message({"uri": "/note", "verb": "POST"}, "hi"))
                    return sync.request(distro.message({"uri": "/echo/abc"}), timeout=5).payload

            answer = await asyncio.to_thread(blocking)
            await got.wait_for(1)
        assert answer == "ABC"
        assert got.payloads == ["hi"]

    # -- confirmed sends -------------------------------------------------------------------

    async def test_a_confirmed_send_returns_after_the_handler_ran(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        done: list[Any] = []

        @server.post("/confirmed")
        async def take(msg: distro.Message) -> None:
            await asyncio.sleep(0.005)  # the confirmation must wait for the handler's end
            done.append(msg.payload)

        async with self.serving(factory, server) as (_, client):
            if self.stores(client):
                pytest.skip(_STORES.format(factory.name, "test_a_stored_confirmed_send_*"))
            for n in range(5):
                sent = distro.message({"uri": "/confirmed", "verb": "POST"}, n)
                await client.send(sent, confirm=True, timeout=5)
                assert done == list(range(n + 1)), "confirmed before the handler finished"
        assert server.stats.handled == 5
        assert client.stats.confirmed == 5

    async def test_a_confirmed_send_whose_handler_raises_is_a_handler_error(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))

        @server.post("/refuse")
        def refuse(msg: distro.Message) -> None:
            raise ValueError("out of stock")

        got = Recorder()
        server.post("/fine", got)
        async with self.serving(factory, server) as (_, client):
            if self.stores(client):
                pytest.skip(_STORES.format(factory.name, "test_a_stored_confirmed_send_*"))
            refused = distro.message({"uri": "/refuse", "verb": "POST"}, self.room(factory))
            with pytest.raises(distro.RemoteError) as info:
                await client.send(refused, confirm=True, timeout=5)
            assert info.value.code == "handler_error"
            # The server goes on, and a failed handler is not confirmed as if it had succeeded.
            await client.send(
                distro.message({"uri": "/fine", "verb": "POST"}, 1), confirm=True, timeout=5
            )
        assert got.payloads == [1]
        assert server.stats.handler_errors == 1
        assert client.stats.confirmed == 1

    async def test_a_stored_confirmed_send_returns_without_a_server_and_is_handled_later(
        self, factory: distro.Factory
    ) -> None:
        # Where confirmed means stored (a durable transport whose connection stores), a
        # confirmed send returns while no member of a group runs; one that starts handles it.
        self.require(factory, "groups")
        group = f"kit-{os.getpid()}-{id(self)}"
        first = factory.server({**self.server_options(factory), "group": group})
        first.post("/stored", lambda m: None)
        async with first:
            pass  # the group exists from now on
        async with factory.client(self.client_options(factory, first)) as client:
            if not self.stores(client):
                pytest.skip(_HANDLED.format(factory.name))
            for n in range(5):
                sent = distro.message({"uri": "/stored", "verb": "POST"}, n)
                await asyncio.wait_for(client.send(sent, confirm=True, timeout=5), 10)
            stats = client.stats
        assert (stats.sent, stats.confirmed, stats.requests) == (5, 5, 0)
        got = Recorder()
        later = factory.server(self.group_member_options(factory, first, group))
        later.post("/stored", got)
        async with later:
            await got.wait_for(5)
        assert got.payloads == list(range(5))

    async def test_a_stored_confirmed_send_whose_handler_raises_still_returns(
        self, factory: distro.Factory
    ) -> None:
        # Stored is all a stored confirmation says: a handler that raises afterwards does not
        # fail the send (the server counts it; a group delivers it again).
        server = factory.server(self.server_options(factory))
        calls: list[Any] = []

        @server.post("/refuse")
        def refuse(msg: distro.Message) -> None:
            calls.append(msg.payload)
            raise ValueError("out of stock")

        got = Recorder()
        server.post("/fine", got)
        async with self.serving(factory, server) as (_, client):
            if not self.stores(client):
                pytest.skip(_HANDLED.format(factory.name))
            await client.send(distro.message({"uri": "/refuse", "verb": "POST"}, 0), confirm=True)
            await client.send(distro.message({"uri": "/fine", "verb": "POST"}, 1), confirm=True)
            await got.wait_for(1)
            await wait_until(lambda: server.stats.handler_errors >= 1, what="the handler error")
        assert calls[:1] == [0]
        assert got.payloads == [1]
        assert client.stats.confirmed == 2

    async def test_a_confirmed_send_nobody_handles_is_a_no_handler_error(
        self, factory: distro.Factory
    ) -> None:
        caps = self.caps(factory)
        if not caps.request_reply:
            pytest.skip(f"{factory.name} declares no request/reply")
        if caps.fan_out:
            pytest.skip("over pub/sub a server never sees a message no route of its takes")
        server = factory.server(self.server_options(factory))
        server.post("/known", lambda m: None)
        async with self.serving(factory, server) as (_, client):
            lost = distro.message({"uri": "/unknown", "verb": "POST"}, self.room(factory))
            with pytest.raises(distro.RemoteError) as info:
                await client.send(lost, confirm=True, timeout=5)
        assert info.value.code == "no_handler"
        assert client.stats.confirmed == 0

    async def test_a_confirmed_send_needs_request_reply(self, factory: distro.Factory) -> None:
        # The transport under test, declaring no request/reply: the client refuses to confirm
        # (a DistroError, before anything is sent), a plain send still goes.
        base = factory.transport
        caps = attrs.evolve(self.caps(factory), request_reply=False)

        def from_options(cls: type[kit.Transport], options: Any) -> kit.Transport:
            made = base.from_options(options)
            made.capabilities = caps  # this instance only
            return made

        no_replies = type(
            base.__name__,
            (base,),
            {"capabilities": caps, "from_options": classmethod(from_options)},
        )
        variant = distro.create(no_replies)
        server = variant.server(self.server_options(factory))
        got = Recorder()
        server.post("/one-way", got)
        async with self.serving(variant, server) as (_, client):
            msg = distro.message({"uri": "/one-way", "verb": "POST"}, "confirm me")
            stores = self.stores(client)
            if stores:
                # Confirmed by the broker's storing it: no reply needed, so it is sent.
                await client.send(msg, confirm=True, timeout=5)
            else:
                with pytest.raises(distro.DistroError, match="request/reply"):
                    await client.send(msg, confirm=True, timeout=5)
            await client.send(distro.message({"uri": "/one-way", "verb": "POST"}, "plain"))
            await got.wait_for(2 if stores else 1)
        assert got.payloads == (["confirm me", "plain"] if stores else ["plain"])

    async def test_a_confirmed_send_checks_its_timeout(self, factory: distro.Factory) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/t", got)
        async with self.serving(factory, server) as (_, client):
            for bad in (0, -1, 0.0, math.inf, math.nan):
                with pytest.raises(ValueError, match="timeout"):
                    await client.send(
                        distro.message({"uri": "/t", "verb": "POST"}), confirm=True, timeout=bad
                    )
            for wrong in ("5", None, True):
                with pytest.raises(TypeError, match="timeout"):
                    await client.send(
                        distro.message({"uri": "/t", "verb": "POST"}),
                        confirm=True,
                        timeout=wrong,  # type: ignore[arg-type]
                    )
            await client.send(distro.message({"uri": "/t", "verb": "POST"}, "ok"), confirm=True)
            await got.wait_for(1)  # where confirmed means stored, it may not be handled yet
        assert got.payloads == ["ok"], "a refused timeout must not send anything"
        assert server.stats.received == 1

    async def test_a_repeated_confirmed_frame_is_handled_once(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "request_reply")
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/once", got)
        async with server:
            # A connection straight from the transport: the frame is sent twice, as a client
            # that did not hear the confirmation sends it again (docs/wire-format.md).
            options = self.client_options(factory, server)
            back = _RawClient()
            connection = await factory.transport.from_options(options).connect(back)
            try:
                msg = distro.message({"uri": "/once", "verb": "POST"}, {"n": 1})
                headers = {**msg.headers, "replyTo": connection.reply_to, "confirm": True}
                frame = distro.message(headers, msg.payload, id=msg.id)
                data = frame.to_bytes()
                await connection.request(data, frame)
                await wait_until(lambda: len(back.frames) == 1, what="the confirmation")
                await connection.request(data, frame)
                await wait_until(lambda: len(back.frames) == 2, what="the repeat's confirmation")
            finally:
                await asyncio.wait_for(connection.aclose(), 10)
        assert got.payloads == [{"n": 1}], "the repeat ran the handler again"
        first, again = (distro.parse(f) for f in back.frames)
        assert first.headers["inReplyTo"] == again.headers["inReplyTo"] == msg.id
        assert "error" not in first.headers and "error" not in again.headers
        assert back.frames[0] == back.frames[1], "a repeat is answered with the same reply"
        assert server.stats.repeats == 1
        assert server.stats.handled == 1

    # -- RECEIVED acknowledgements --------------------------------------------------------

    async def test_received_goes_to_the_address_in_the_headers(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "acknowledgements")
        origin = factory.server(self.server_options(factory))
        acks = Recorder()
        if self.caps(factory).fan_out:
            # Over pub/sub a catch-all would also get (and acknowledge) the message itself.
            origin.get("RECEIVED", acks)
        else:
            origin.receive(acks)
        target = factory.server(self.server_options(factory))
        handled = Recorder()
        target.post("/order", handled)
        async with origin, self.serving(factory, target) as (_, client):
            headers = {"uri": "/order", "verb": "POST", **self.ack_address(factory, origin)}
            sent = distro.message(headers, {"item": 1})
            await client.send(sent)
            [ack] = await acks.wait_for(1)
        assert ack.headers == {"uri": "RECEIVED"}
        assert ack.payload == {"msgId": sent.id}
        assert handled.messages == [sent]
        assert target.stats.acks_sent == 1

    async def test_received_is_not_sent_to_a_third_party_by_default(
        self, factory: distro.Factory
    ) -> None:
        self.require(factory, "acknowledgements")
        server = factory.server(self.server_options(factory))
        handled = Recorder()
        server.post("/order", handled)
        async with self.serving(factory, server) as (_, client):
            headers = {
                "uri": "/order",
                "verb": "POST",
                "address": self.foreign_ack_address,
                "port": 9,
            }
            await client.send(distro.message(headers))
            await handled.wait_for(1)
            await wait_until(
                lambda: server.stats.dropped.get("ack_refused", 0) == 1,
                what="the refused acknowledgement to be counted",
            )
        assert server.stats.acks_sent == 0

    # -- limits ---------------------------------------------------------------------------

    async def test_message_size_limit(self, factory: distro.Factory) -> None:
        limit = self.caps(factory).max_message_size
        server = factory.server(self.server_options(factory))
        got = Recorder()
        server.post("/big", got)
        async with self.serving(factory, server) as (_, client):
            if limit is None:
                big = distro.message({"uri": "/big", "verb": "POST"}, "x" * 200_000)
                await client.send(big)
                [msg] = await got.wait_for(1)
                assert msg == big
                return
            fits = distro.message({"uri": "/big", "verb": "POST"}, "")
            room = limit - len(fits.to_bytes())
            just_fits = distro.message({"uri": "/big", "verb": "POST"}, "y" * room, id=fits.id)
            assert len(just_fits.to_bytes()) == limit
            too_big = distro.message({"uri": "/big", "verb": "POST"}, "z" * (room + 1))
            with pytest.raises(distro.MessageTooLarge) as info:
                await client.send(too_big)
            assert info.value.limit == limit
            assert str(limit) in str(info.value)
            await client.send(just_fits)
            [msg] = await got.wait_for(1)
        assert msg == just_fits

    async def test_a_reply_too_large_for_the_transport_is_an_error_reply(
        self, factory: distro.Factory
    ) -> None:
        limit = self.caps(factory).max_message_size
        if limit is None or not self.caps(factory).request_reply:
            pytest.skip(f"{factory.name} declares no message size limit")
        server = factory.server(self.server_options(factory))
        server.get("/huge", lambda m: "h" * limit)
        async with self.serving(factory, server) as (_, client):
            with pytest.raises(distro.RemoteError, match="at most"):
                await client.request(
                    distro.message({"uri": "/huge"}, self.room(factory)), timeout=5
                )

    # -- lifecycle ------------------------------------------------------------------------

    async def test_close_lets_handlers_in_flight_finish(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory), close_timeout=5)
        started = asyncio.Event()
        release = asyncio.Event()
        finished: list[str] = []

        @server.post("/work")
        async def work(msg: distro.Message) -> None:
            started.set()
            await release.wait()
            finished.append(msg.payload)

        async with server, factory.client(self.client_options(factory, server)) as client:
            await client.send(distro.message({"uri": "/work", "verb": "POST"}, "job"))
            await asyncio.wait_for(started.wait(), 5)
            closing = asyncio.ensure_future(server.aclose())
            await asyncio.sleep(0)
            assert not closing.done()
            release.set()
            await asyncio.wait_for(closing, 5)
        assert finished == ["job"]
        assert not server.is_serving

    async def test_close_is_bounded_when_a_handler_never_finishes(
        self, factory: distro.Factory
    ) -> None:
        server = factory.server(self.server_options(factory), close_timeout=0.1)
        started = asyncio.Event()

        @server.post("/stuck")
        async def stuck(msg: distro.Message) -> None:
            started.set()
            await asyncio.Event().wait()

        async with server, factory.client(self.client_options(factory, server)) as client:
            await client.send(distro.message({"uri": "/stuck", "verb": "POST"}))
            await asyncio.wait_for(started.wait(), 5)
            await asyncio.wait_for(server.aclose(), 5)

    async def test_backpressure_bounds_handlers_in_flight(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory), max_concurrency=4)
        running = 0
        peak = 0
        done = Recorder()

        @server.post("/job")
        async def job(msg: distro.Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.001)
            running -= 1
            done(msg)

        count = 40
        async with self.serving(factory, server) as (_, client):
            for i in range(count):
                await client.send(distro.message({"uri": "/job", "verb": "POST"}, i))
            if self.caps(factory).reliable:
                await done.wait_for(count, timeout=10)
            else:
                await done.wait_for(1, timeout=10)
        assert 1 <= peak <= 4

    async def test_a_server_reports_its_address_and_stats(self, factory: distro.Factory) -> None:
        server = factory.server(self.server_options(factory))
        with pytest.raises(distro.StateError):
            server.address  # noqa: B018 - the property raises before start
        got = Recorder()
        server.post("/x", got)
        async with self.serving(factory, server) as (_, client):
            host, port = server.address
            assert isinstance(host, str) and isinstance(port, int) and port > 0
            await client.send(distro.message({"uri": "/x", "verb": "POST"}))
            await client.send(distro.message({"uri": "/nowhere", "verb": "POST"}))
            await got.wait_for(1)
            # Over pub/sub (fan_out) a server subscribes by route: "/nowhere" never reaches it.
            unrouted = 0 if self.caps(factory).fan_out else 1
            if unrouted:
                await wait_until(lambda: server.stats.dropped.get("no_route") == 1, what="no_route")
        assert server.stats.received == 1 + unrouted
        assert server.stats.handled == 1

    async def test_a_client_after_close_raises_state_error(self, factory: distro.Factory) -> None:
        async with self.serving(factory) as (_, client):
            pass
        with pytest.raises(distro.StateError):
            await client.send(distro.message({"uri": "/x"}))

    # -- groups and redelivery (where the transport declares them) -------------------------

    def group_member_options(
        self, factory: distro.Factory, first: distro.Server, group: str
    ) -> dict[str, Any]:
        """Options for another member of ``first``'s group: by default the same address and
        port (members share them, as the memory transport's do); a broker transport whose
        members claim addresses of their own overrides this."""
        return {**self.client_options(factory, first), "group": group}

    async def test_group_members_each_take_a_message_once(self, factory: distro.Factory) -> None:
        self.require(factory, "groups")
        group = f"kit-{os.getpid()}-{id(self)}"
        seen: list[tuple[int, int]] = []
        first = factory.server({**self.server_options(factory), "group": group})
        first.post("/grouped", lambda m: seen.append((0, m.payload)))
        async with first:
            second = factory.server(self.group_member_options(factory, first, group))
            second.post("/grouped", lambda m: seen.append((1, m.payload)))
            async with second, factory.client(self.client_options(factory, first)) as client:
                for n in range(40):
                    await client.send(distro.message({"uri": "/grouped", "verb": "POST"}, n))
                await wait_until(lambda: len(seen) >= 40, what="40 messages handled")
                await asyncio.sleep(0.1)  # a duplicate would show up by now
        assert sorted(n for _, n in seen) == list(range(40)), "each message exactly once"
        assert {member for member, _ in seen} == {0, 1}, "both members took some"

    async def test_a_failed_message_is_delivered_again(self, factory: distro.Factory) -> None:
        caps = self.caps(factory)
        if not (caps.groups and caps.redelivery):
            pytest.skip(f"{factory.name} declares no redelivery")
        group = f"kit-{os.getpid()}-{id(self)}"
        attempts: list[int] = []

        def flaky(msg: distro.Message) -> None:
            attempts.append(msg.payload)
            if len(attempts) < 3:
                raise RuntimeError("not yet")

        options = {**self.server_options(factory), "group": group}
        options.update(self.redelivery_options(factory))
        server = factory.server(options)
        server.post("/flaky", flaky)
        async with server, factory.client(self.client_options(factory, server)) as client:
            await client.send(distro.message({"uri": "/flaky", "verb": "POST"}, 1))
            await wait_until(lambda: len(attempts) >= 3, timeout=15, what="three deliveries")
        assert attempts[:3] == [1, 1, 1]
        assert server.stats.handler_errors == 2

    def redelivery_options(self, factory: distro.Factory) -> dict[str, Any]:
        """Server options that make redelivery quick enough for a test (a transport whose
        option names differ overrides this)."""
        return {"redelivery_delay": 0.01}

    # -- middleware -----------------------------------------------------------------------

    async def test_middleware_sees_every_message_and_frame(self, factory: distro.Factory) -> None:
        """The middleware chain (docs/middleware.md) runs over this transport: every message
        the client sends passes its hooks and reaches the server's, every frame either side
        sends passes ``outgoing``, the reply passes ``reply_received``."""
        self.require(factory, "request_reply")
        from distro_core.middleware import Incoming, Middleware, Outgoing

        log: list[tuple[str, object]] = []

        class Witness(Middleware):
            def sending(self, ctx: Outgoing) -> None:
                ctx.set_header("witnessed", ctx.kind)

            def received(self, ctx: Incoming) -> None:
                log.append(("received", ctx.headers.get("witnessed")))

            def outgoing(self, frame: bytes) -> bytes:
                log.append(("outgoing", distro.parse(frame).uri))
                return frame

            def reply_received(self, ctx: Incoming) -> None:
                log.append(("reply_received", ctx.message.uri))

        server = factory.server(self.server_options(factory), middleware=[Witness()])
        got = Recorder("ok")
        server.post("/witnessed", got)
        async with server:
            options = self.client_options(factory, server)
            async with factory.client(options, middleware=[Witness()]) as client:
                await client.send(distro.message({"uri": "/witnessed", "verb": "POST"}, 1))
                await got.wait_for(1)
                reply = await client.request(distro.message({"uri": "/witnessed", "verb": "POST"}))
        assert reply.payload == "ok"
        assert [m.headers.get("witnessed") for m in got.messages] == ["send", "request"]
        assert log.count(("received", "send")) == log.count(("received", "request")) == 1
        assert log.count(("outgoing", "/witnessed")) == 2  # the client's two frames
        assert log.count(("outgoing", "REPLY")) == 1  # the server's reply
        assert log.count(("reply_received", "REPLY")) == 1

    # -- the transport contract itself (no Server or Client in between) --------------------

    @asynccontextmanager
    async def raw_link(
        self, factory: distro.Factory
    ) -> AsyncIterator[tuple[kit.Listener, kit.Connection, _RawServer, _RawClient]]:
        """A listener and a connection to it, made straight from the transport, with recording
        receivers in place of the core's Server and Client."""
        core = _RawServer()
        listener = await factory.transport.from_options(self.server_options(factory)).listen(core)
        try:
            stand_in = type("S", (), {"address": listener.address})()
            options = self.client_options(factory, stand_in)
            back = _RawClient()
            connection = await factory.transport.from_options(options).connect(back)
            try:
                yield listener, connection, core, back
            finally:
                await asyncio.wait_for(connection.aclose(), 10)
        finally:
            await asyncio.wait_for(listener.aclose(), 10)

    async def test_contract_frames_arrive_whole_with_a_peer(self, factory: distro.Factory) -> None:
        async with self.raw_link(factory) as (_, connection, core, _):
            sent = [distro.message({"uri": "/contract", "verb": "POST"}, i) for i in range(20)]
            for msg in sent:
                await connection.send(msg.to_bytes(), msg)
            await wait_until(lambda: len(core.frames) >= 20, what="20 frames at the listener")
            assert sorted(f for f, _ in core.frames) == sorted(m.to_bytes() for m in sent)
            for _, peer in core.frames:
                assert isinstance(peer, kit.Peer)
                assert peer.host is None or isinstance(peer.host, str)
            if self.caps(factory).ordered:
                assert [f for f, _ in core.frames] == [m.to_bytes() for m in sent]

    async def test_contract_closing_twice_is_harmless_and_bounded(
        self, factory: distro.Factory
    ) -> None:
        async with self.raw_link(factory) as (listener, connection, _, _):
            await asyncio.wait_for(connection.aclose(), 10)
            await asyncio.wait_for(connection.aclose(), 10)
            await asyncio.wait_for(listener.aclose(), 10)
            await asyncio.wait_for(listener.aclose(), 10)
        # ...and a third time, by raw_link's own clean-up, without error.

    async def test_contract_send_after_close_is_a_transport_error(
        self, factory: distro.Factory
    ) -> None:
        async with self.raw_link(factory) as (_, connection, _, _):
            await connection.aclose()
            msg = distro.message({"uri": "/contract", "verb": "POST"})
            # Neither silence nor a bare OSError or library exception: a distro error.
            with pytest.raises(distro.TransportError):
                await asyncio.wait_for(connection.send(msg.to_bytes(), msg), 10)
            with pytest.raises(distro.TransportError):
                data = msg.to_bytes()[:-1] + b',"x":1}'
                await asyncio.wait_for(connection.request(data, msg), 10)

    async def test_contract_pause_holds_frames_and_resume_delivers_them_all(
        self, factory: distro.Factory
    ) -> None:
        async with self.raw_link(factory) as (listener, connection, core, _):
            first = distro.message({"uri": "/contract", "verb": "POST"}, "first")
            await connection.send(first.to_bytes(), first)
            await wait_until(lambda: len(core.frames) == 1, what="the first frame")
            listener.pause_reading()
            sent = [distro.message({"uri": "/contract", "verb": "POST"}, i) for i in range(10)]
            for msg in sent:
                await connection.send(msg.to_bytes(), msg)
            # A negative check needs a window: while paused, nothing may come through.
            await asyncio.sleep(0.2)
            assert len(core.frames) == 1, "frames were delivered while reading was paused"
            listener.resume_reading()
            await wait_until(lambda: len(core.frames) == 11, what="the held frames after resume")
            got = [f for f, _ in core.frames[1:]]
            if self.caps(factory).ordered:
                assert got == [m.to_bytes() for m in sent]
            else:
                assert sorted(got) == sorted(m.to_bytes() for m in sent)

    async def test_contract_settle_is_safe_and_per_frame_where_peers_settle(
        self, factory: distro.Factory
    ) -> None:
        async with self.raw_link(factory) as (_, connection, core, _):
            for i in range(3):
                msg = distro.message({"uri": "/contract", "verb": "POST"}, i)
                await connection.send(msg.to_bytes(), msg)
            await wait_until(lambda: len(core.frames) == 3, what="3 frames")
            peers = [peer for _, peer in core.frames]
            if any(peer.settles for peer in peers):
                # Settling acknowledges one delivery: a settling peer stands for one frame.
                assert len({id(peer) for peer in peers}) == 3
            for peer, outcome in zip(peers, kit.Outcome, strict=False):
                # Never raises, never blocks (a transport with redelivery may act on it).
                peer.settle(outcome, "settled by the conformance kit")

    # -- blocking entry points -------------------------------------------------------------

    async def test_server_run_serves_until_sigint_then_closes(
        self, factory: distro.Factory
    ) -> None:
        if not self.caps(factory).cross_process:
            pytest.skip(f"{factory.name} cannot be reached from another process")
        if not isinstance(getattr(self, "transport", factory.name), str):
            pytest.skip("server.run() is tested in a subprocess, which needs a registered name")
        options = self.server_options(factory)
        script = textwrap.dedent(f"""
            import sys
            import distro_core as distro
            factory = distro.create({factory.name!r})
            server = factory.server({options!r})
            server.get("/ping", lambda m: "pong")
            server.post("/stop", lambda m: None)
            original_start = server.start
            async def start():
                await original_start()
                print(repr(server.address), flush=True)
            server.start = start
            server.run()
            print("closed", server.stats.handled, flush=True)
        """)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            if not line:
                raise AssertionError((await proc.stderr.read()).decode())
            address = ast.literal_eval(line)  # the tuple the child printed
            fake = type("S", (), {"address": address})()
            options = self.client_options(factory, fake)
            async with factory.client(options) as client:
                if self.caps(factory).request_reply:
                    reply = await client.request(distro.message({"uri": "/ping"}), timeout=5)
                    assert reply.payload == "pong"
                else:
                    await client.send(distro.message({"uri": "/ping"}))
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()
        assert out.decode().startswith("closed"), (out, err)


class _RawServer:
    """Records what a listener hands the core (a stand-in for :class:`distro.Server`)."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, kit.Peer]] = []
        self.dropped: list[tuple[str, str]] = []

    def frame_received(self, data: bytes, peer: kit.Peer) -> None:
        self.frames.append((data, peer))

    def frame_dropped(self, reason: str, detail: str) -> None:
        self.dropped.append((reason, detail))

    # Pub/sub transports subscribe by route: a catch-all makes them take everything.
    routes: tuple[kit.RouteInfo, ...] = ()
    has_catch_all = True


class _RawClient:
    """Records what a connection hands the core (a stand-in for :class:`distro.Client`)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lost: list[BaseException | None] = []
        self.failed: list[tuple[str, kit.RequestFailure, str]] = []
        self.unheard_sends: list[str] = []

    def frame_received(self, data: bytes) -> None:
        self.frames.append(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def request_failed(self, request_id: str, failure: kit.RequestFailure, detail: str) -> None:
        self.failed.append((request_id, failure, detail))

    def unheard(self, detail: str) -> None:
        self.unheard_sends.append(detail)
