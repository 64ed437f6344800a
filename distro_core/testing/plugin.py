"""pytest plugin of the conformance kit (loaded through the ``pytest11`` entry point).

It only acts on tests marked ``distro_async`` (the kit's own): it runs those ``async def``
tests on a fresh event loop, bounded in time, so the kit needs no async pytest plugin.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

TIMEOUT = 60.0


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's marker."""
    config.addinivalue_line(
        "markers", "distro_async: an async test of the distro conformance kit (run by the kit)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a ``distro_async`` coroutine test with ``asyncio.run``, bounded by a time-out."""
    if not (
        pyfuncitem.get_closest_marker("distro_async")
        and inspect.iscoroutinefunction(pyfuncitem.obj)
    ):
        return None
    kwargs: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }

    async def bounded() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), TIMEOUT)

    asyncio.run(bounded())
    return True
