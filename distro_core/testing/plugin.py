"""pytest plugin of the conformance kit (loaded through the ``pytest11`` entry point).

It runs ``async def`` tests on a fresh event loop with ``asyncio.run``, bounded in time, so the
kit needs no async pytest plugin. By default it only acts on tests marked ``distro_async`` (the
kit's own); set ``distro_async_tests = true`` in a project's pytest configuration to have it run
every ``async def`` test there too (distro's own suites do), instead of adding an async plugin.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

TIMEOUT = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``distro_async_tests`` ini option."""
    parser.addini(
        "distro_async_tests",
        type="bool",
        default=False,
        help="run every async def test with asyncio.run (distro's conformance kit runner)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's marker."""
    config.addinivalue_line(
        "markers", "distro_async: an async test of the distro conformance kit (run by the kit)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``distro_async`` coroutine test with ``asyncio.run``, bounded by a time-out."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if not (
        pyfuncitem.get_closest_marker("distro_async")
        or pyfuncitem.config.getini("distro_async_tests")
    ):
        return None
    kwargs: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }

    async def bounded() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), TIMEOUT)

    asyncio.run(bounded())
    return True
