"""distro's pytest plugin (loaded through the ``pytest11`` entry point of distro-core).

It is inert unless used: it adds a fixture, a marker and an ini option, and runs no test that
did not ask for it.

* The ``distro_test`` fixture gives a test a :class:`~distro_core.testing.DistroTest`: a fresh
  in-memory network, a factory on it that records what its clients send, and test clients
  (docs/testing.md).
* It runs ``async def`` tests on a fresh event loop with ``asyncio.run``, bounded in time, so
  no async pytest plugin is needed: tests that use ``distro_test`` (unless another async
  plugin's marker, ``asyncio``, ``anyio`` or ``trio``, claims them), tests marked
  ``distro_async`` (the conformance kit's), and, with ``distro_async_tests = true`` in a
  project's pytest configuration, every ``async def`` test there (distro's own suites do).
* It runs them on asyncio's own event loop, or on the one ``--distro-loop`` names
  (``asyncio``, ``uvloop`` or ``auto``; also the ``distro_loop`` ini option), or a test's or
  class's ``@pytest.mark.distro_loop("uvloop")`` names (the marker wins): so the conformance
  kit runs on uvloop with ``pytest --distro-loop uvloop``, or for one test class with the
  marker.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._kit import DistroTest

TIMEOUT = 60.0
"""Seconds an ``async def`` test run by the plugin may take before it fails."""

FIXTURE = "distro_test"
_OTHER_RUNNERS = ("asyncio", "anyio", "trio")  # markers of other async plugins: theirs to run


_LOOPS = ("asyncio", "auto", "uvloop")  # distro_core._loops.LOOPS, not imported here


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``distro_async_tests`` and ``distro_loop`` ini options and
    ``--distro-loop``."""
    parser.addini(
        "distro_async_tests",
        type="bool",
        default=False,
        help="run every async def test with asyncio.run (distro's conformance kit runner)",
    )
    parser.addini(
        "distro_loop",
        default="asyncio",
        help="the event loop distro runs async def tests on: asyncio, uvloop or auto",
    )
    parser.getgroup("distro").addoption(
        "--distro-loop",
        choices=_LOOPS,
        default=None,
        help="the event loop distro runs async def tests on (default: the distro_loop ini "
        "option, else asyncio); a test's distro_loop marker wins",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's markers; check the loop asked for is installed.

    :raises pytest.UsageError: ``--distro-loop`` or ``distro_loop`` names an unknown loop, or
        uvloop when it is not installed.
    """
    config.addinivalue_line(
        "markers", "distro_async: an async test of the distro conformance kit (run by the kit)"
    )
    config.addinivalue_line(
        "markers",
        "distro_loop(name): run this async test on the event loop 'asyncio', 'uvloop' or "
        "'auto' (overrides --distro-loop)",
    )
    loop = _session_loop(config)
    if loop != "asyncio":
        from .._loops import loop_factory

        try:
            loop_factory(loop)
        except (ImportError, ValueError) as exc:
            raise pytest.UsageError(f"--distro-loop / distro_loop: {exc}") from None


def _session_loop(config: pytest.Config) -> str:
    loop = config.getoption("distro_loop", None) or config.getini("distro_loop") or "asyncio"
    return str(loop)


def _loop(item: pytest.Function) -> str:
    """The loop ``item`` runs on: its ``distro_loop`` marker's, else the session's."""
    marker = item.get_closest_marker("distro_loop")
    if marker is None:
        return _session_loop(item.config)
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(
            f"{item.nodeid}: write the marker as distro_loop('asyncio' | 'uvloop' | 'auto')"
        )
    return str(marker.args[0])


@pytest.fixture
def distro_test() -> Iterator[DistroTest]:
    """A fresh in-memory network for this test, a factory on it whose clients record what they
    send, and test clients for its servers (:class:`~distro_core.testing.DistroTest`)."""
    from ._kit import DistroTest  # here: pytest sessions that never use it do not import distro

    yield DistroTest()


def _ours(item: pytest.Function) -> bool:
    if item.get_closest_marker("distro_async") or item.config.getini("distro_async_tests"):
        return True
    if FIXTURE not in item.fixturenames:
        return False
    return not any(item.get_closest_marker(name) for name in _OTHER_RUNNERS)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test that is ours (see the module docstring) on a fresh event loop
    (asyncio's, or the one ``--distro-loop`` or the test's ``distro_loop`` marker names),
    bounded by :data:`TIMEOUT`."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj) or not _ours(pyfuncitem):
        return None
    kwargs: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }

    async def bounded() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**kwargs), TIMEOUT)

    loop = _loop(pyfuncitem)
    if loop == "asyncio":
        asyncio.run(bounded())
    else:
        from .._loops import run

        run(bounded, loop)
    return True
