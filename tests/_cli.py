"""Driving the real ``distro`` console script in subprocesses, bounded in time (loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

DISTRO = Path(sys.executable).parent / ("distro.exe" if os.name == "nt" else "distro")
ROOT = Path(__file__).resolve().parents[1]


def distro(
    *args: str, cwd: Path | None = None, timeout: float = 30, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``distro ARGS`` to its end."""
    return subprocess.run(
        [str(DISTRO), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def free_port() -> int:
    """A tcp port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Running:
    """A ``distro`` process started in the background; its standard error is read to a file."""

    def __init__(self, args: Sequence[str], cwd: Path | None, log: Path) -> None:
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(
            [str(DISTRO), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 20) -> None:
        """Wait (bounded) until ``text`` appears on its standard error."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen in {timeout}s:\n{self.stderr()}")
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``signum`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self._err.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._err.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def running(
    args: Sequence[str], tmp: Path, name: str, cwd: Path | None = None
) -> Iterator[Running]:
    """``distro ARGS`` in the background for the block; killed (by its pid) if still running."""
    proc = Running(args, cwd or tmp, tmp / f"{name}.log")
    try:
        yield proc
    finally:
        proc.kill()
