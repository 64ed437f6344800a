"""``python -m distro_core``: the ``distro`` command line (see :mod:`distro_core.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
