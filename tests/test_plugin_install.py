"""Plugins as a user gets them: pip-installed into a fresh virtual environment, found by name.

One virtual environment per test session (the pip installs are the slow part): distro-core is
installed from this repository (not editable) with the example plugin ``distro-pigeon``
(tests/example_plugin); the scripts run from a temporary directory, so nothing in the checkout
is importable and the plugin can only be reached through its installed entry point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "example_plugin"
PLUGINS = {
    "nats": ROOT / "plugins" / "distro_nats",
    "redis": ROOT / "plugins" / "distro_redis",
    "zmq": ROOT / "plugins" / "distro_zmq",
}
PIP_TIMEOUT = 900


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(*cmd: object, cwd: Path, timeout: float) -> str:
    """Run ``cmd``; fail the test with its output unless it exits 0. Returns stdout."""
    result = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(str(c) for c in cmd)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the checkout to run scripts from."""
    return tmp_path_factory.mktemp("outside")


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory, workdir: Path) -> Path:
    """The interpreter of a fresh venv holding distro-core and distro-pigeon, as pip installs."""
    home = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", home, cwd=workdir, timeout=180)
    python = home / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(
        python, "-m", "pip", "install", "--quiet", ROOT, f"{EXAMPLE}[test]",
        cwd=workdir, timeout=PIP_TIMEOUT,
    )  # fmt: skip
    return python


def run_script(python: Path, workdir: Path, source: str) -> str:
    script = workdir / "script.py"
    script.write_text(textwrap.dedent(source))
    return run(python, script, cwd=workdir, timeout=120)


REQUEST_OVER_PIGEON = """
    import asyncio, json, sys
    import distro_core as distro

    async def main():
        factory = distro.create("pigeon")
        server = factory.server(port=0)
        server.get("/hello/{name}", lambda msg: f"hello {msg.params['name']}")
        async with server, factory.client(address=server.address[0], port=server.address[1]) as c:
            reply = await c.request(distro.message({"uri": "/hello/world"}), timeout=5)
        return reply.payload

    untouched = "distro_pigeon" not in sys.modules
    reply = asyncio.run(main())
    print(json.dumps({
        "untouched_before_create": untouched,
        "reply": reply,
        "core": distro.__file__,
        "transports": {
            name: [info.distribution, info.transport.__module__]
            for name, info in distro.transports().items()
        },
    }))
"""


def test_an_installed_plugin_is_created_by_name_with_no_import(python: Path, workdir: Path) -> None:
    out = json.loads(run_script(python, workdir, REQUEST_OVER_PIGEON))
    assert out["untouched_before_create"] is True
    assert out["reply"] == "hello world"
    # The installed copy, not this checkout: the install is a real one.
    assert Path(out["core"]).resolve().is_relative_to(python.parent.parent.resolve())
    transports = out["transports"]
    assert transports["pigeon"] == ["distro-pigeon", "distro_pigeon._transport"]
    for name in ("memory", "udp4", "udp6", "tcp"):
        assert transports[name][0] == "distro-core"


def test_the_example_plugin_passes_the_conformance_kit_as_installed(
    python: Path, workdir: Path
) -> None:
    out = run(
        python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", EXAMPLE / "tests",
        cwd=workdir, timeout=600,
    )  # fmt: skip
    summary = out.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 22, out[-3000:]
    assert "failed" not in summary and "error" not in summary, out[-3000:]
    # Only the kit's capability-driven skips (pigeon has no groups or redelivery).
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all("declares no" in line for line in skips), out[-3000:]


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_a_plugin_of_this_repository_installs_and_registers(
    python: Path, workdir: Path, name: str
) -> None:
    project = PLUGINS[name]
    if not (project / "pyproject.toml").exists():
        pytest.skip(f"{project.relative_to(ROOT)} has no pyproject.toml in this checkout")
    run(python, "-m", "pip", "install", "--quiet", project, cwd=workdir, timeout=PIP_TIMEOUT)
    out = run_script(
        python,
        workdir,
        f"""
        import json, warnings
        import distro_core as distro
        warnings.simplefilter("error")  # a plugin that cannot load must fail here
        info = distro.transports()[{name!r}]
        print(json.dumps([info.name, info.distribution, distro.create({name!r}).name]))
        """,
    )
    assert json.loads(out) == [name, f"distro-{name}", name]
