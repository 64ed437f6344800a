"""The README's main job: the orders -> customers example runs over every installed transport."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import distro_core as distro

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
