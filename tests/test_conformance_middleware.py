"""The behavioural suite (distro_core.testing) with middleware on every server and client,
registered the way a plugin registers it (the ``distro_middleware`` hook): signing (every frame
either way signed and checked, so a path that bypassed the chain would send an unsigned frame,
which the other side drops) and a witness whose client side marks each message and whose
server side refuses one that is not marked."""

from __future__ import annotations

from typing import Any

import pytest

import distro_core as distro
from distro_core.middleware import Incoming, Middleware, Outgoing, Refuse, Signing, hookimpl
from distro_core.testing import TransportSuite
from distro_core.transport import Registry

BUNDLED = ["memory", "tcp", "udp4"]
KEYS = {"suite": b"conformance-suite-secret-key"}


class Witness(Middleware):
    """Counts what passes through each hook; marks what the client sends, refuses on the
    server what is not marked (RECEIVED, sent by servers, excepted)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def _count(self, hook: str) -> None:
        self.counts[hook] = self.counts.get(hook, 0) + 1

    def received(self, ctx: Incoming) -> None:
        self._count("received")
        if ctx.headers["uri"] != "RECEIVED" and ctx.headers.get("suite-witness") is not True:
            raise Refuse("unwitnessed", f"message {ctx.message.id} bypassed the client's chain")
        ctx.remove_headers("suite-witness")

    def handled(self, ctx: Incoming) -> None:
        self._count("handled")

    def sending(self, ctx: Outgoing) -> None:
        self._count("sending")
        ctx.set_header("suite-witness", True)

    def finished(self, ctx: Outgoing) -> None:
        self._count("finished")


class _Plugin:
    def __init__(self) -> None:
        self.made: list[tuple[str, Witness]] = []

    @hookimpl
    def distro_middleware(self, side: str, transport: str) -> list[Middleware]:
        witness = Witness()
        self.made.append((side, witness))
        return [Signing(KEYS, "suite"), witness]


class TestTransportsWithMiddleware(TransportSuite):
    @pytest.fixture(params=BUNDLED)
    def factory(self, request: pytest.FixtureRequest) -> Any:
        self.transport = request.param
        self.plugin = _Plugin()
        registry = Registry(entry_points=False)
        registry.register(self.plugin, name="suite-middleware")
        yield distro.create(request.param, registry=registry)

    async def test_a_repeated_confirmed_frame_is_handled_once(self, factory: Any) -> None:
        pytest.skip("sends the same unsigned frame twice from a raw connection: refused here")

    async def test_message_size_limit(self, factory: Any) -> None:
        pytest.skip("a message at the limit is over it once signed (about 110 bytes more)")

    async def test_server_run_serves_until_sigint_then_closes(self, factory: Any) -> None:
        pytest.skip("its server runs in a child process, made without this test's registry")
