"""The README's main job: the orders -> customers example runs over every installed transport;
and its services pass their own tests, written with distro's test kit (docs/testing.md)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import distro_core as distro
from distro_core.testing import DistroTest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "orders_customers.py"
EXPECTED = ["memory", "udp4", "udp6", "tcp", "redis", "zmq"]


@pytest.mark.parametrize("transport", EXPECTED)
def test_the_example_runs_over(transport: str) -> None:
    if transport not in distro.transports():
        pytest.fail(
            f"transport {transport!r} is not installed; `python3 dev.py test` installs the "
            "plugins in plugins/ (distro-redis, distro-zmq)"
        )
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), transport],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 5 orders acknowledged (RECEIVED)" in done.stdout
    assert "customer 7 total is 50" in done.stdout
    assert "customer 42 total is 25" in done.stdout


def test_the_example_defaults_to_udp4() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "customers service on udp4 ('127.0.0.1'," in done.stdout


def test_an_unknown_transport_is_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "carrier-pigeon-2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "no transport named 'carrier-pigeon-2'" in done.stderr
    assert "udp4" in done.stderr


def _example(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_customers_service_keeps_totals(distro_test: DistroTest) -> None:
    # The example's customers service, tested in-process with distro's test client.
    customers = _example(EXAMPLE).customers_service(distro_test.factory)
    async with distro_test.client(customers) as client:
        for customer, amount in [("7", 12), ("42", 5), ("7", 30)]:
            await client.send(f"/customer/{customer}/orders", {"amount": amount}, verb="POST")
        assert (await client.request("/customer/7")).payload == {"id": "7", "total": 42}
        assert (await client.request("/customer/42")).payload == {"id": "42", "total": 5}
        assert (await client.request("/customer/1")).payload == {"id": "1", "total": 0}
    assert distro_test.sent == []  # the customers service calls no other service


async def test_the_running_examples_customers_service(distro_test: DistroTest) -> None:
    service = _example(EXAMPLE.parent / "running" / "customers.py").service
    async with distro_test.client(service) as client:
        reply = await client.request("/customer/9/orders", {"amount": 4}, verb="POST")
        assert reply.payload == {"id": "9", "total": 4}
        await client.send("/customer/9/orders", {"amount": 6}, verb="POST")
        assert (await client.request("/customer/9")).payload == {"id": "9", "total": 10}
        with pytest.raises(distro.RemoteError) as failed:  # no amount: the handler fails
            await client.send("/customer/9/orders", {}, verb="POST")
        assert failed.value.code == "handler_error"
