"""The install commands of README.md and docs/quickstart.md, run in a fresh virtual environment
from this checkout: distro-core alone has the ``distro`` script, which names the ``cli`` extra;
with ``[cli]`` the command works (from a directory outside the checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PIP_TIMEOUT = 900


def _run(*cmd: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def test_the_documented_install_lines_are_there() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install /path/to/distro " in readme
    assert "pip install '/path/to/distro[cli]'" in readme
    quickstart = (ROOT / "docs" / "quickstart.md").read_text()
    assert "pip install .  " in quickstart and "pip install '.[cli]'" in quickstart


def test_core_alone_then_with_the_cli_extra(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _ok(_run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=outside, timeout=180))
    bin_dir = tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin")
    pip = [bin_dir / "python", "-m", "pip", "install", "--quiet"]

    # README: pip install /path/to/distro  (quickstart: `pip install .` from the checkout)
    _ok(_run(*pip, ".", cwd=ROOT, timeout=PIP_TIMEOUT))
    bare = _run(bin_dir / "distro", "transports", cwd=outside)
    assert bare.returncode == 1
    assert bare.stderr.strip() == (
        "distro: the command line needs the 'cli' extra: pip install 'distro-core[cli]'"
    )
    installed = _ok(_run(bin_dir / "python", "-m", "pip", "list", "--format=json", cwd=outside))
    names = {item["name"].lower() for item in json.loads(installed)}
    assert "click" not in names and {"attrs", "pluggy", "distro-core"} <= names

    # README: pip install '/path/to/distro[cli]'
    _ok(_run(*pip, f"{ROOT}[cli]", cwd=outside, timeout=PIP_TIMEOUT))
    table = _ok(_run(bin_dir / "distro", "transports", "--json", cwd=outside))
    by_name = {item["name"]: item for item in json.loads(table)}
    assert by_name["tcp"]["distribution"] == "distro-core"
    core = _ok(
        _run(
            bin_dir / "python", "-c", "import distro_core; print(distro_core.__file__)", cwd=outside
        )
    )
    assert Path(core.strip()).resolve().is_relative_to((tmp_path / "venv").resolve())
