"""Which event loop distro's blocking entry points run on: ``server.run(loop=...)``,
``service.run(..., loop=...)``, ``distro run --loop`` (and the other commands) and the
conformance kit's ``--distro-loop``.

* ``"asyncio"`` (the default): :func:`asyncio.run`, so the loop of asyncio's event loop policy
  (the standard selector loop, unless the program installed another policy).
* ``"uvloop"``: a loop of uvloop's (the ``uvloop`` extra), made for this run only, with
  ``asyncio.Runner(loop_factory=uvloop.new_event_loop)``: no global policy is changed.
* ``"auto"``: uvloop when it is installed, else asyncio's.

Only these entry points choose a loop: distro's servers and clients run on whatever loop runs
them, so a program that makes its own loop (any loop) keeps it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LOOPS", "LoopName", "loop_factory", "resolve", "run"]

LoopName = Literal["asyncio", "auto", "uvloop"]
"""The names a loop is chosen by."""

LOOPS: tuple[LoopName, ...] = ("asyncio", "auto", "uvloop")
"""Every :data:`LoopName`, in the order help texts list them."""

MISSING = "loop='uvloop' needs uvloop, which is not installed: pip install 'distro-core[uvloop]'"
"""What :func:`loop_factory` says when uvloop is asked for and missing."""

_T = TypeVar("_T")


def _uvloop() -> Any:
    """The uvloop module, or None when it is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def resolve(loop: str) -> Literal["asyncio", "uvloop"]:
    """The loop ``loop`` names here: ``"auto"`` becomes ``"uvloop"`` when uvloop is
    installed, else ``"asyncio"``.

    :raises TypeError: ``loop`` is not a string (an event loop object, say).
    :raises ValueError: ``loop`` is not one of :data:`LOOPS`.
    """
    if not isinstance(loop, str):
        raise TypeError(
            f"loop takes a name ('asyncio', 'uvloop' or 'auto'), got {type(loop).__name__}; "
            "to serve on a loop of your own, await server.serve_until_signalled() on it"
        )
    if loop not in LOOPS:
        raise ValueError(f"loop must be 'asyncio', 'uvloop' or 'auto', got {loop!r}")
    if loop == "auto":
        return "uvloop" if _uvloop() is not None else "asyncio"
    return "uvloop" if loop == "uvloop" else "asyncio"


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop ``loop`` names: None for ``"asyncio"`` (asyncio's own
    choice), ``uvloop.new_event_loop`` for ``"uvloop"``.

    :raises ImportError: ``"uvloop"`` and uvloop is not installed (the text names the extra).
    :raises TypeError, ValueError: as :func:`resolve`.
    """
    if resolve(loop) == "asyncio":
        return None
    uvloop = _uvloop()
    if uvloop is None:
        raise ImportError(MISSING, name="uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Callable[[], Coroutine[Any, Any, _T]], loop: str = "asyncio") -> _T:
    """Run ``main()`` to completion on a fresh event loop of the kind ``loop`` names, as
    :func:`asyncio.run` does (and closing the loop after). ``main`` is called only once the
    loop is known to be available, so a bad ``loop`` leaves no coroutine unawaited.

    :raises ImportError, TypeError, ValueError: as :func:`loop_factory`.
    """
    factory = loop_factory(loop)
    if factory is None:
        return asyncio.run(main())
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())
    # Python 3.10 has no asyncio.Runner; uvloop.run does there what the Runner does.
    uvloop = _uvloop()  # pragma: no cover - Python 3.10 only
    result: _T = uvloop.run(main())  # pragma: no cover - Python 3.10 only
    return result  # pragma: no cover - Python 3.10 only
