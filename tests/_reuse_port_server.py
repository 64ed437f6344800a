"""A distro server in a process of its own, for tests/test_reuse_port_processes.py.

    python tests/_reuse_port_server.py TRANSPORT PORT

Serves TRANSPORT (``tcp`` or ``udp4``) on 127.0.0.1:PORT with ``reuse_port=True`` (PORT 0: an
ephemeral port, which a second process then shares). Counts the ``POST /order`` messages it
handles; ``GET /count`` answers ``[pid, count]``, so a client learns which process it reached.
Prints ``ready PORT`` once serving. On SIGTERM it closes gracefully, prints ``handled COUNT``
and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import distro_core as distro


async def main(name: str, port: int) -> None:
    server = distro.create(name).server(address="127.0.0.1", port=port, reuse_port=True)
    handled = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    @server.post("/order")
    def take(msg: distro.Message) -> None:
        nonlocal handled
        handled += 1

    @server.get("/count")
    def count(msg: distro.Message) -> list[int]:
        return [os.getpid(), handled]

    await server.start()
    print(f"ready {server.address[1]}", flush=True)
    await stop.wait()
    await server.aclose()
    print(f"handled {handled}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
