"""Every ```python block in README.md, docs/*.md and plugins/*/README.md runs as written.

Each block runs on its own, in a subprocess of this interpreter with a time-out, from a
temporary directory: what a reader would get by pasting it into a file. A block needing a
transport that is not installed fails here, as it would for the reader.

Two HTML comments, on the line before a block, change what is checked:

* ``<!-- excerpt: PATH -->``: the block (in any language) is an excerpt of the file at PATH
  (relative to the repository root) and must appear in it verbatim, so it cannot drift from
  the code it quotes. It is not run.
* ``<!-- not-run: REASON -->``: a python block that cannot run alone (say, a fragment). It is
  reported as skipped with its reason; keep these rare.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "plugins").glob("*/README.md")),
]
TIMEOUT = 90

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
# Loose on purpose (not_run, no-run...), so that a misspelt marker is reported, not ignored.
_MARKER = re.compile(
    r"<!--\s*(?P<kind>not[-_ ]?run|no[-_ ]?run|excerpt)\s*:?\s*(?P<arg>.*?)\s*-->", re.IGNORECASE
)
_KINDS = ("excerpt", "not-run")


class Block(NamedTuple):
    """One fenced code block of a document."""

    document: Path
    line: int
    lang: str
    code: str
    marker: str | None  # "excerpt", "not-run", or None
    arg: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def _blocks(document: Path) -> list[Block]:
    text = document.read_text(encoding="utf-8")
    blocks = []
    for fence in _FENCE.finditer(text):
        before = text[: fence.start()].rstrip().rsplit("\n", 1)[-1]
        marker = _MARKER.fullmatch(before.strip())
        if marker and marker["kind"] not in _KINDS:
            marker = None  # misspelt: the block runs, and the marker test says why
        blocks.append(
            Block(
                document,
                text.count("\n", 0, fence.start()) + 1,
                fence["lang"].strip().split(" ")[0].lower(),
                textwrap.dedent(fence["body"]),
                marker["kind"] if marker else None,
                marker["arg"] if marker else "",
            )
        )
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in _blocks(document)]
PYTHON = [b for b in BLOCKS if b.lang in ("python", "py") and b.marker != "excerpt"]
EXCERPTS = [b for b in BLOCKS if b.marker == "excerpt"]


def _param(block: Block) -> object:
    marks = []
    if block.marker == "not-run":
        marks.append(pytest.mark.skip(reason=f"not-run ({block.where}): {block.arg}"))
    return pytest.param(block, id=block.where, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in PYTHON])
def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the example at {block.where} ran for more than {TIMEOUT}s: {exc.stderr!r}")
    assert result.returncode == 0, (
        f"the example at {block.where} failed (exit {result.returncode}):\n"
        f"{result.stderr[-4000:]}\n--- stdout ---\n{result.stdout[-2000:]}"
    )


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where) for b in EXCERPTS])
def test_excerpt_matches_its_source(block: Block) -> None:
    source = ROOT / block.arg
    assert source.is_file(), f"{block.where} quotes {block.arg}, which does not exist"
    text = source.read_text(encoding="utf-8")
    wanted = block.code.strip("\n")
    lines = [line.rstrip() for line in text.splitlines()]
    excerpt = [line.rstrip() for line in wanted.splitlines()]
    # Match line by line, letting the excerpt be indented less than the source (a method).
    for start in range(len(lines) - len(excerpt) + 1):
        window = lines[start : start + len(excerpt)]
        if textwrap.dedent("\n".join(window)) == "\n".join(excerpt):
            return
    pytest.fail(f"the excerpt at {block.where} is not in {block.arg} (any more):\n{wanted}")


def test_markers_are_well_formed_and_not_run_is_rare() -> None:
    problems = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        marked = {b.line for b in _blocks(document) if b.marker}
        for found in _MARKER.finditer(text):
            line = text.count("\n", 0, found.start()) + 1
            where = f"{document.relative_to(ROOT)}:{line}"
            if found["kind"] not in _KINDS:
                problems.append(f"{where}: write the marker as 'not-run:' or 'excerpt:'")
            elif not found["arg"]:
                problems.append(f"{where}: a {found['kind']} marker needs a reason or path")
            elif not any(0 < block_line - line <= 2 for block_line in marked):
                problems.append(f"{where}: the marker is not right before a code block")
    not_run = [b for b in PYTHON if b.marker == "not-run"]
    for block in not_run:
        if block.lang not in ("python", "py"):
            problems.append(f"{block.where}: only python blocks can be not-run")
    assert not problems, "\n".join(problems)
    runnable = len(PYTHON) - len(not_run)
    assert len(not_run) * 4 <= runnable, (
        f"{len(not_run)} of {len(PYTHON)} python examples are not run; make them runnable"
    )


def test_the_docs_have_examples_to_run() -> None:
    by_document = {
        d.relative_to(ROOT).as_posix(): sum(1 for b in PYTHON if b.document == d) for d in DOCUMENTS
    }
    wanted = ["README.md", "docs/quickstart.md", "docs/plugins.md", "docs/security.md"]
    wanted += ["plugins/distro_redis/README.md", "plugins/distro_zmq/README.md"]
    for name in wanted:
        assert by_document.get(name, 0) >= 1, f"{name} has no python example"
