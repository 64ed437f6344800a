"""distro-zmq's tests: ``async def`` tests run on a fresh event loop with a time bound."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

ASYNC_TEST_TIMEOUT = 30.0


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests with asyncio.run, bounded so a hang fails instead of stalling."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if pyfuncitem.get_closest_marker("distro_async"):
        return None  # the conformance kit's plugin runs these
    funcargs = pyfuncitem.funcargs
    kwargs: dict[str, Any] = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def bounded() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), ASYNC_TEST_TIMEOUT)

    asyncio.run(bounded())
    return True
