"""Brokers for transport tests: a server binary of the tests' own on a spare loopback port,
started and stopped by its process id, and a clear skip (or, under CI, failure) when there is
none."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import NoReturn

import pytest

__all__ = ["ServerProcess", "free_port", "unavailable"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unavailable(reason: str, how_to_get: str) -> NoReturn:
    """Skip a test that cannot get the server it needs, saying how to get one; under CI
    (``CI=true``) fail it instead, so that a missing service cannot pass as skips."""
    message = f"{reason}; {how_to_get}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class ServerProcess:
    """A server process of the tests' own (``redis-server``, ``nats-server``...) on
    127.0.0.1: a subclass says how to start it (:meth:`argv`) and how to tell it is up
    (:meth:`answers`).

    :param binary: the server's executable.
    :param port: the loopback port it serves.
    :cvar stop_signal: what :meth:`stop` sends (SIGTERM, then SIGKILL after 5 s).
    """

    stop_signal: signal.Signals = signal.SIGTERM

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> Sequence[str]:
        """The command line that starts it."""
        raise NotImplementedError

    def answers(self) -> bool:
        """Whether it is up and answering."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        """The running server's process id."""
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait (bounded) until it answers.

        :raises RuntimeError: it exited, or did not answer within ``timeout`` seconds.
        """
        self._proc = subprocess.Popen(
            list(self.argv()), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.argv()[0]} on port {self.port} did not come up")
            time.sleep(0.02)

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections stay open, nothing is read or answered."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen process go on (SIGCONT)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop it with :attr:`stop_signal` (SIGKILL after 5 s) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
