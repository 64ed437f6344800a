#!/usr/bin/env python3
"""One entry point for newcomers and CI; needs only python3.

    python3 dev.py example [TRANSPORT]   run the orders -> customers example (udp4 by default)
    python3 dev.py test [PYTEST ARGS]    install everything into .venv and run the whole suite
                                         (pytest over the core and both plugins, then ruff check,
                                         ruff format --check and mypy --strict)
    python3 dev.py bench                 run the benchmark tables (see docs/benchmarks.md)

It makes ./.venv, installs distro-core and the plugins into it (editable) with their test
dependencies, and reinstalls only when a pyproject.toml changed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
PLUGINS = [p for p in (ROOT / "plugins").glob("distro_*") if (p / "pyproject.toml").exists()]
# The example third-party plugin of docs/plugins.md, installed so its own tests run too.
EXAMPLES = [p for p in [ROOT / "tests" / "example_plugin"] if (p / "pyproject.toml").exists()]
STAMP = VENV / ".distro-installed"


def _fingerprint(extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in [
        ROOT / "pyproject.toml",
        *sorted(p / "pyproject.toml" for p in PLUGINS + EXAMPLES),
    ]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run(*cmd: object, check: bool = True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check).returncode


def ensure_env(extras: str) -> None:
    """Create .venv and install the project into it unless it is up to date."""
    if not PY.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    want = _fingerprint(extras)
    if STAMP.exists() and STAMP.read_text() == want:
        return
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    targets = ["-e", f".[{extras}]"]
    for plugin in [*PLUGINS, *EXAMPLES]:
        targets += ["-e", f"{plugin.relative_to(ROOT)}[test]"]
    run(PY, "-m", "pip", "install", "--quiet", *targets)
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command == "example":
        ensure_env("fast,test,dev,cli,reload")
        return run(PY, "examples/orders_customers.py", *rest, check=False)
    if command == "test":
        ensure_env("fast,test,dev,cli,reload")
        env_ok = True
        # Every plugin's tests, including plugins the root pyproject's testpaths do not list.
        paths = [] if rest else ["tests", *(str(p.relative_to(ROOT) / "tests") for p in PLUGINS)]
        code = run(PY, "-m", "pytest", *paths, *rest, check=False)
        if not rest:
            # The full suite also holds the code to its lint and type standards.
            packages = ["distro_core", *(str(p / p.name) for p in PLUGINS)]
            sources = [
                name
                for name in (
                    "distro_core",
                    "plugins",
                    "tests",
                    "examples",
                    "bench",
                    "dev.py",
                    "noxfile.py",
                )
                if (ROOT / name).exists()
            ]
            env_ok &= run(PY, "-m", "ruff", "check", *sources, check=False) == 0
            env_ok &= run(PY, "-m", "ruff", "format", "--check", *sources, check=False) == 0
            env_ok &= run(PY, "-m", "mypy", *packages, check=False) == 0
        return code if code else (0 if env_ok else 1)
    if command == "bench":
        ensure_env("fast,test,dev,cli,reload")
        return run(PY, "bench/run.py", *rest, check=False)
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
