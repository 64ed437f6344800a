"""docs/running.md as a reader runs it: the two services of examples/running, each started with
the real ``distro run`` in a process of its own (orders first: start order does not matter),
answer a ``distro request`` from a third process; over tcp, then over redis by changing only
the command lines.

The commands are the page's own (each must appear in it verbatim); the test swaps the ports
8001/8002 for free ones (in the commands and the copied example files) and, over redis, adds
``--option prefix=...`` to each command so that runs sharing a Redis stay apart.
"""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest
from _cli import ROOT, distro, free_port, running

DOC = ROOT / "docs" / "running.md"
EXAMPLES = ROOT / "examples" / "running"

TCP = [
    "distro run customers:service --transport tcp --option port=8001",
    "distro run orders:service --transport tcp --option port=8002",
    "distro request tcp /order --verb POST --option port=8002 "
    """--payload '{"customer": "7", "amount": 12}'""",
]
REDIS = [
    "distro run customers:service --transport redis --option port=8001",
    "distro run orders:service --transport redis --option port=8002",
    """distro request redis /order --verb POST --payload '{"customer": "7", "amount": 12}'""",
]


def test_the_commands_are_the_pages() -> None:
    text = DOC.read_text()
    for command in TCP + REDIS:
        assert command in text, command
    # Only the command lines change between tcp and redis.
    assert [c.replace("redis", "tcp") for c in REDIS[:2]] == TCP[:2]


@pytest.mark.parametrize(
    ("commands", "extra"), [(TCP, []), (REDIS, ["prefix"])], ids=["tcp", "redis"]
)
def test_two_services_in_separate_processes_answer_a_third(
    commands: list[str], extra: list[str], tmp_path: Path
) -> None:
    ports = {"8001": str(free_port()), "8002": str(free_port())}

    def swap(text: str) -> str:
        for old, new in ports.items():
            text = text.replace(old, new)
        return text

    app = tmp_path / "app"
    app.mkdir()
    for source in EXAMPLES.glob("*.py"):
        (app / source.name).write_text(swap(source.read_text()))
    added = [f"--option=prefix=doc-{uuid.uuid4().hex[:8]}:"] if extra else []
    customers, orders, request = (shlex.split(swap(c))[1:] + added for c in commands)

    with running(orders, tmp_path, "orders", cwd=app) as first:
        first.wait_for("serving")
        with running(customers, tmp_path, "customers", cwd=app) as second:
            second.wait_for("ready on")
            first.wait_for("ready on")
            replies = [distro(*request, cwd=app) for _ in range(2)]
            assert [r.returncode for r in replies] == [0, 0], [r.stderr for r in replies]
            assert [json.loads(r.stdout) for r in replies] == [
                {"order": "placed", "customer": "7", "total": 12},
                {"order": "placed", "customer": "7", "total": 24},
            ]
            assert second.stop() == 0
        assert first.stop() == 0
    for proc in (first, second):
        log = proc.stderr()
        assert "SIGTERM received" in log and "distro: closed: " in log, log
        assert "Traceback" not in log, log
