"""One member of a queue group, in a process of its own (test_nats_group.py starts three).

Usage: python _group_member.py URL PREFIX GROUP NAME. It prints ``ready`` once subscribed,
counts the ``/job`` messages it handles (``GET /count/<name>`` says how many), and on
SIGTERM prints ``handled <name> <json list of payloads>`` and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import distro_core as distro


async def main(url: str, prefix: str, group: str, name: str) -> None:
    handled: list[int] = []
    stop = asyncio.Event()
    server = distro.create("nats").server(url=url, prefix=prefix, group=group)
    server.post("/job", lambda m: handled.append(m.payload))
    # Outside the group: the test asks each member how many it handled.
    counter = distro.create("nats").server(url=url, prefix=prefix)
    counter.get(f"/count/{name}", lambda m: len(handled))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server, counter:
        print("ready", flush=True)
        await stop.wait()
    print("handled", name, json.dumps(handled), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
