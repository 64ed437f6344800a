"""``module:attr`` to a service or server, as uvicorn loads ``app:app``."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .._server import Server
from .._service import Service
from ._values import UsageProblem

__all__ = ["load"]


def load(target: str, app_dir: str) -> Service | Server:
    """Import ``module`` from ``target`` (``module:attr``, with ``app_dir`` first on the
    import path) and return its ``attr``.

    :raises UsageProblem: the target is malformed, the module or attribute does not exist, or
        the attribute is neither a :class:`Service` nor a :class:`Server`.
    :raises Exception: whatever importing the module raised (with a note naming it).
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageProblem(f"{target!r}: write the target as module:attribute (app:service)")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise UsageProblem(
                f"cannot import module {module_name!r} (not found from {app_dir})"
            ) from exc
        raise
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageProblem(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(found, (Service, Server)):
        raise UsageProblem(
            f"{target} is a {type(found).__name__}, not a distro.Service or distro.Server"
        )
    return found
