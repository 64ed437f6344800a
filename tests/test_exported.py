"""Meta tests: the public surface is exactly ``distro_core.__all__``, and all of it is documented.

Modelled on httpx's tests/test_exported_members.py and pytest's documented hookspecs.
"""

from __future__ import annotations
import __future__

import ast
import inspect
import itertools
import types
from pathlib import Path
from typing import Any

import pytest

import distro_core as distro
import distro_core.cli
import distro_core.middleware
import distro_core.testing
from distro_core import hookspecs
from distro_core import transport as kit

PACKAGE = Path(distro.__file__).parent

# The public namespaces, one per audience: service authors, transport authors, transport
# authors' tests (the conformance kit), the console script's entry point, and middleware.
NAMESPACES = [distro, kit, distro_core.testing, distro_core.cli, distro_core.middleware]
# Middleware's optional extras (Tracing: otel, Metrics: prometheus) load on first use.
_optional = (distro_core.middleware.Tracing, distro_core.middleware.Metrics)
_ids = [ns.__name__ for ns in NAMESPACES]


@pytest.mark.parametrize("namespace", NAMESPACES, ids=_ids)
def test_all_is_sorted_and_unique(namespace: types.ModuleType) -> None:
    assert namespace.__all__ == sorted(set(namespace.__all__))


@pytest.mark.parametrize("namespace", NAMESPACES, ids=_ids)
def test_all_is_exactly_the_public_names(namespace: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(namespace).items()
        if not name.startswith("_")
        # Submodules (hookspecs, transport, testing, ...) and "from __future__ import" are
        # attributes of the package, not names it exports.
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert public == set(namespace.__all__) - {"__version__"}


@pytest.mark.parametrize("namespace", NAMESPACES, ids=_ids)
def test_every_exported_name_is_importable(namespace: types.ModuleType) -> None:
    scope: dict[str, Any] = {}
    exec(f"from {namespace.__name__} import *", scope)
    for name in namespace.__all__:
        assert scope[name] is getattr(namespace, name)


def test_no_exported_object_lives_in_a_private_name() -> None:
    for namespace in NAMESPACES:
        for name in namespace.__all__:
            assert not name.startswith("_") or name == "__version__", name


def test_service_authors_and_transport_authors_get_separate_namespaces() -> None:
    # The contract lives in the kit only; the top level is what a service author uses.
    for name in ("Transport", "Peer", "Listener", "Connection", "Capabilities", "hookimpl"):
        assert name in kit.__all__
        assert not hasattr(distro, name), name
    assert not set(distro.__all__) & set(kit.__all__)
    # The bundled transports are private: the public transports() is a function, not a package.
    assert callable(distro.transports)
    assert distro.transports()["memory"].transport.__module__.startswith("distro_core._")


def _attribute_docstrings() -> dict[str, str]:
    """``NAME = value`` followed by a string literal, in every module of the package."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for statement, following in itertools.pairwise(body):
            if not (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                continue
            if isinstance(statement, ast.Assign):
                targets = statement.targets
            elif isinstance(statement, ast.AnnAssign):
                targets = [statement.target]
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = following.value.value
    return found


def _own_docstring(value: Any) -> str | None:
    if inspect.isclass(value):
        doc = value.__dict__.get("__doc__")
        return doc if isinstance(doc, str) else None
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return value.__doc__
    return None  # a constant, alias or marker: its docstring follows its assignment


@pytest.mark.parametrize(
    ("namespace", "name"),
    [(ns, n) for ns in NAMESPACES for n in ns.__all__ if n != "__version__"],
    ids=[f"{ns.__name__}.{n}" for ns in NAMESPACES for n in ns.__all__ if n != "__version__"],
)
def test_every_exported_name_has_a_docstring(namespace: types.ModuleType, name: str) -> None:
    value = getattr(namespace, name)
    doc = _own_docstring(value)
    if doc is None and not (inspect.isclass(value) or inspect.isfunction(value)):
        doc = _attribute_docstrings().get(name)
    assert doc and doc.strip(), f"{namespace.__name__}.{name} has no docstring"


def _hooks() -> list[tuple[str, Any]]:
    marker = f"{hookspecs.PROJECT}_spec"
    return [
        (name, value)
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, marker)
    ]


def test_there_are_hooks_and_each_is_named_for_the_project() -> None:
    hooks = _hooks()
    assert hooks
    for name, _ in hooks:
        assert name.startswith("distro_"), name


@pytest.mark.parametrize(("name", "hook"), _hooks(), ids=[name for name, _ in _hooks()])
def test_every_hook_is_documented(name: str, hook: Any) -> None:
    doc = inspect.getdoc(hook)
    assert doc, f"hook {name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip().endswith("."), f"hook {name}: the first line is not a summary"
    assert ":returns:" in doc, f"hook {name} does not say what its return value means"
    for parameter in inspect.signature(hook).parameters:
        assert f":param {parameter}:" in doc, f"hook {name} does not document {parameter}"
