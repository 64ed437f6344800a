"""The console script's entry point, which imports click only when it runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``distro`` command with ``argv`` (the process's arguments by default); exits.

    Without click installed, says which extra to install and exits with status 1.
    """
    try:
        import click  # noqa: F401
    except ImportError:
        sys.stderr.write(
            "distro: the command line needs the 'cli' extra: pip install 'distro-core[cli]'\n"
        )
        sys.exit(1)
    from ._commands import cli

    cli.main(args=list(argv) if argv is not None else None, prog_name="distro")
