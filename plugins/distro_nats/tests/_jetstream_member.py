"""A jetstream group member in a process of its own, for the tests that kill one.

    python _jetstream_member.py URL PREFIX GROUP OUT [ACK_WAIT]

Serves ``POST /job``: each message's payload (a number) is written to OUT, one line per
handling, with one unbuffered write each, so a SIGKILL loses nothing already handled. Prints
``ready`` once serving; closes on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import sys

import distro_core as distro


async def main(url: str, prefix: str, group: str, out: str, ack_wait: float) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    server = distro.create("jetstream").server(
        url=url, prefix=prefix, group=group, ack_wait=ack_wait
    )

    @server.post("/job")
    def job(msg: distro.Message) -> None:
        os.write(fd, b"%d\n" % msg.payload)

    original = server.start

    async def start() -> None:
        await original()
        print("ready", flush=True)

    server.start = start  # type: ignore[method-assign]
    try:
        await server.serve_until_signalled()
    finally:
        os.close(fd)


if __name__ == "__main__":
    url, prefix, group, out = sys.argv[1:5]
    ack_wait = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
    asyncio.run(main(url, prefix, group, out, ack_wait))
