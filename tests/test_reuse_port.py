"""``reuse_port=True``: several servers on one port, the kernel spreading the load (tcp, udp)."""

from __future__ import annotations

import asyncio

import pytest

import distro_core as distro


@pytest.mark.parametrize("name", ["tcp", "udp4", "udp6"])
async def test_two_servers_share_one_port_and_split_the_clients(name: str) -> None:
    factory = distro.create(name)
    counts = [0, 0]
    first = factory.server(port=0, reuse_port=True)
    async with first:
        port = first.address[1]
        second = factory.server(port=port, reuse_port=True)
        for index, server in enumerate([first, second]):

            def take(msg: distro.Message, index: int = index) -> None:
                counts[index] += 1

            server.post("/order", take)
        async with second:
            # Without reuse_port, a second server on the port is refused as before.
            with pytest.raises(distro.AddressInUse):
                async with factory.server(port=port):
                    pass
            host = first.address[0]
            # 24 clients: the kernel picks a server by each client's address and port, so
            # all of them landing on one server has a chance of 2**-23.
            clients = [factory.client(address=host, port=port) for _ in range(24)]
            for client in clients:
                await client.open()
            for n in range(10):
                for client in clients:
                    await client.send(distro.message({"uri": "/order", "verb": "POST"}, n))
            for _ in range(250):
                if sum(counts) >= 240:
                    break
                await asyncio.sleep(0.02)
            for client in clients:
                await client.aclose()
    assert sum(counts) == 240, counts
    assert counts[0] > 0 and counts[1] > 0, counts
