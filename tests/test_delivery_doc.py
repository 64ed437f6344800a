"""docs/delivery.md cites a test for every claim of its table, and every test it cites exists.

The page's table has a footnote in each cell; each footnote names pytest node ids
(``path::test``, ``path::test[param]``, ``path::Class::test``). The cited files are collected
with pytest in a subprocess (``--collect-only``), and each id must be among what it collected:
exactly, or, for an id without ``[...]``, as the function of some parametrisation.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "delivery.md"

_NODE = re.compile(r"`((?:tests|plugins)/[\w/.-]+\.py(?:::[\w.-]+)+(?:\[[^\]`]*\])?)`")
# A footnote definition runs from "[^name]:" to the next definition or heading (it may go on
# over indented lines); references are "[^name]" not followed by ":".
_DEFINITION = re.compile(r"^\[\^(?P<name>[\w-]+)\]:(?P<body>.*?)(?=^\[\^|^#|\Z)", re.M | re.S)
_REFERENCE = re.compile(r"\[\^([\w-]+)\](?!:)")
# Some notes add an id's other parametrisations in the prose: "`path::test[a]` and `[b]`".
_MORE = re.compile(r"`(?P<node>[^`\[]+)\[[^\]`]*\]`(?P<more>(?:,?\s+(?:and\s+)?`\[[^\]`]*\]`)+)")


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def _table(text: str) -> list[list[str]]:
    """The rows of the page's first table (header, then data rows), split into cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, "docs/delivery.md has no table"
    return [rows[0], *rows[2:]]  # without the --- line


def _definitions(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _DEFINITION.finditer(text)}


def _nodes(body: str) -> list[str]:
    nodes = _NODE.findall(body)
    for more in _MORE.finditer(body):
        nodes += [more["node"] + param for param in re.findall(r"`(\[[^\]`]*\])`", more["more"])]
    return nodes


def cited_nodes() -> list[str]:
    """Every node id the page's footnotes name."""
    return sorted({node for body in _definitions(_page()).values() for node in _nodes(body)})


@cache
def collected(files: tuple[str, ...]) -> frozenset[str]:
    """The node ids pytest collects from ``files`` (run from the repository root)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ids = frozenset(line for line in result.stdout.splitlines() if "::" in line)
    assert ids, f"pytest collected nothing from {files}:\n{result.stdout[-3000:]}{result.stderr}"
    return ids


def test_every_cell_of_the_table_cites_a_footnote() -> None:
    header, *rows = _table(_page())
    assert len(header) == 9, header
    assert len(rows) == 6, [row[0] for row in rows]
    missing = [
        f"{row[0]} / {column}"
        for row in rows
        for column, cell in zip(header[1:], row[1:], strict=True)
        if not _REFERENCE.search(cell)
    ]
    assert not missing, f"cells without a footnote: {missing}"


def test_every_footnote_cited_is_defined_and_names_a_test() -> None:
    text = _page()
    definitions = _definitions(text)
    cited = set(_REFERENCE.findall(text))
    assert cited - definitions.keys() == set(), "footnotes cited but not defined"
    assert definitions.keys() - cited == set(), "footnotes defined but never cited"
    empty = [name for name, body in definitions.items() if not _nodes(body)]
    assert not empty, f"footnotes that name no test: {empty}"


def test_the_cited_files_exist() -> None:
    files = {node.split("::")[0] for node in cited_nodes()}
    missing = sorted(f for f in files if not (ROOT / f).is_file())
    assert not missing, f"docs/delivery.md cites files that do not exist: {missing}"


def test_every_cited_test_is_collected_by_pytest() -> None:
    nodes = cited_nodes()
    assert len(nodes) >= 40, nodes
    files = tuple(sorted({node.split("::")[0] for node in nodes}))
    ids = collected(files)
    functions = {node.split("[")[0] for node in ids}
    missing = [n for n in nodes if n not in ids and ("[" in n or n not in functions)]
    assert not missing, "docs/delivery.md cites tests pytest does not collect:\n" + "\n".join(
        missing
    )


def test_the_check_would_catch_a_test_that_is_gone() -> None:
    # The parsing finds the ids of a footnote, and a made-up one is not among those collected.
    body = (
        " `tests/test_delivery_doc.py::test_no_such_test` and "
        "`tests/test_delivery_doc.py::test_every_cell_of_the_table_cites_a_footnote[x]`, `[y]`"
    )
    nodes = _nodes(body)
    assert nodes == [
        "tests/test_delivery_doc.py::test_no_such_test",
        "tests/test_delivery_doc.py::test_every_cell_of_the_table_cites_a_footnote[x]",
        "tests/test_delivery_doc.py::test_every_cell_of_the_table_cites_a_footnote[y]",
    ]
    ids = collected(("tests/test_delivery_doc.py",))
    assert "tests/test_delivery_doc.py::test_the_check_would_catch_a_test_that_is_gone" in ids
    assert not set(nodes) & ids
