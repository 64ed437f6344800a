"""The README's example runs as written (on the tests' NATS, with the tests' prefix)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(nats_url: str, prefix: str) -> None:
    example = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)[0]  # the first
    source = example.replace("nats://127.0.0.1:4222", nats_url).replace('"readme"', repr(prefix))
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'id': '7', 'total': 12}"
