"""The ``distro`` command line (``distro run``, ``send``, ``request``, ``listen``,
``transports``; ``python -m distro_core`` is the same). It needs the ``cli`` extra
(``pip install 'distro-core[cli]'``, which installs click); ``--reload`` needs ``reload``
(watchfiles). Importing this package imports neither.
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
