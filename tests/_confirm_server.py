"""A distro tcp server in a process of its own, for tests/test_confirm_faults.py.

    python tests/_confirm_server.py PORT RECORD_FILE

Serves ``POST /order`` on 127.0.0.1:PORT (0: an ephemeral port). The handler appends the id
of each message it handles to RECORD_FILE (one per line) and flushes it before returning, so
the id is in the file (the kernel's page cache: it survives the process being killed) before
the confirmation is sent. Prints ``ready HOST PORT`` once serving. On SIGTERM it closes
gracefully (``server.aclose()``: handlers in flight finish and their replies go out, messages
arriving meanwhile are refused with code ``closing``), prints ``closed HANDLED REPEATS
CLOSING`` and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TextIO

import distro_core as distro


async def main(port: int, out: TextIO) -> None:
    factory = distro.create("tcp")
    server = factory.server(address="127.0.0.1", port=port, close_timeout=10)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    @server.post("/order")
    def take(msg: distro.Message) -> None:
        out.write(msg.id + "\n")
        out.flush()

    await server.start()
    host, bound = server.address
    print(f"ready {host} {bound}", flush=True)
    await stop.wait()
    await server.aclose()
    stats = server.stats
    print(f"closed {stats.handled} {stats.repeats} {stats.dropped.get('closing', 0)}", flush=True)


if __name__ == "__main__":
    with open(sys.argv[2], "a", encoding="ascii") as record:
        asyncio.run(main(int(sys.argv[1]), record))
