"""Developer sessions, each in a clean virtual environment of its own (``pip install nox``).

    nox -l                      list the sessions
    nox -s tests                the whole suite: core, plugins, docs, the plugin install test
    nox -s tests -- -k udp      pytest arguments go after ``--``
    nox -s tests_no_orjson      the core suite on the standard library's json codec
    nox -s lint types docs      ruff; mypy --strict; every example in README and docs
    nox -s bench                the benchmark tables (bench/run.py)

The README's commands (``python3 dev.py test``) need nothing but python3 and run the same
checks in ./.venv; these sessions are a convenience for running one part in isolation.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PLUGINS = sorted(
    str(path.relative_to(ROOT))
    for path in (ROOT / "plugins").glob("distro_*")
    if (path / "pyproject.toml").exists()
)
EXAMPLE_PLUGIN = "tests/example_plugin"
# The import packages: plugins/distro_x/distro_x, and the example plugin's.
PACKAGES = [
    "distro_core",
    *(f"{plugin}/{Path(plugin).name}" for plugin in PLUGINS),
    f"{EXAMPLE_PLUGIN}/distro_pigeon",
]
LINTED = ["distro_core", "plugins", "tests", "noxfile.py", "dev.py"]

nox.options.sessions = ["lint", "types", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _editable_plugins(extra: str = "") -> list[str]:
    args = []
    for plugin in PLUGINS:
        args += ["-e", f"{plugin}{extra}"]
    return args


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, as ``python3 dev.py test`` runs it (without lint and types)."""
    session.install("-e", ".[fast,test]", *_editable_plugins("[test]"))
    # Every plugin's tests (plugins/distro_*/tests), unless pytest arguments name others.
    paths = [] if session.posargs else ["tests", *(f"{plugin}/tests" for plugin in PLUGINS)]
    session.run("pytest", *paths, *session.posargs)


@nox.session
def tests_no_orjson(session: nox.Session) -> None:
    """The suite with the standard library's json (distro-core without its [fast] extra); the
    plugins are installed too, since the docs and example tests run over them."""
    session.install("-e", ".[test]", *_editable_plugins("[test]"), "-e", EXAMPLE_PLUGIN)
    session.run("pip", "uninstall", "--yes", "orjson")
    session.run(
        "python",
        "-c",
        "import distro_core._codec as c; assert c.BACKEND == 'json', c.BACKEND; print(c.BACKEND)",
    )
    session.run("pytest", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: the checks and the formatting, as configured in pyproject.toml."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict over distro-core and every plugin package."""
    session.install(
        "-e", ".[test,dev]", *_editable_plugins("[test]"), "-e", EXAMPLE_PLUGIN
    )  # fmt: skip
    session.run("mypy", "--strict", *PACKAGES)


@nox.session
def docs(session: nox.Session) -> None:
    """Run every python example in README.md and docs/*.md, and check the quoted excerpts."""
    session.install("-e", ".[fast,test]")
    session.run("pytest", "tests/test_docs_examples.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark tables (see docs/benchmarks.md); arguments go to bench/run.py."""
    session.install("-e", ".[fast,test]", *_editable_plugins(), "-r", "bench/requirements.txt")
    session.run("python", "bench/run.py", *session.posargs)
