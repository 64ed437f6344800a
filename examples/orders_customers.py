"""The orders -> customers example of the original distro README, as two services.

The customers service keeps a running total per customer; the orders service places orders,
asks for a RECEIVED acknowledgement of each (delivered to its own server), then asks the
customers service for the totals. Run it over any installed transport:

    python3 dev.py example            # udp4
    python3 dev.py example tcp        # or memory, udp6, redis, zmq, ...
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import distro_core as distro

ORDERS = [("7", 12), ("7", 30), ("42", 5), ("7", 8), ("42", 20)]


def customers_service(factory: distro.Factory) -> distro.Server:
    """The customers service: POST adds an order to a customer's total; GET reads it."""
    server = factory.server(port=0)
    totals: dict[str, int] = {}

    @server.post("/customer/{id}/orders")
    def add_order(msg: distro.Message) -> None:
        customer = msg.params["id"]
        totals[customer] = totals.get(customer, 0) + msg.payload["amount"]

    @server.get("/customer/{id}")
    def read(msg: distro.Message) -> dict[str, Any]:
        customer = msg.params["id"]
        return {"id": customer, "total": totals.get(customer, 0)}

    return server


async def main(transport: str) -> int:
    """Run both services over ``transport`` and print what happens."""
    factory = distro.create(transport)
    customers = customers_service(factory)
    orders = factory.server(port=0)  # the orders service's own endpoint, for acknowledgements
    acked: set[str] = set()
    all_acked = asyncio.Event()

    @orders.receive
    def on_received(msg: distro.Message) -> None:
        if msg.uri == "RECEIVED":
            acked.add(msg.payload["msgId"])
            if len(acked) == len(ORDERS):
                all_acked.set()

    async with customers, orders:
        print(f"customers service on {transport} {customers.address}")
        host, port = customers.address
        async with factory.client(address=host, port=port) as client:
            for customer, amount in ORDERS:
                order = distro.message(
                    {
                        "uri": f"/customer/{customer}/orders",
                        "verb": "POST",
                        "address": orders.address[0],
                        "port": orders.address[1],
                    },
                    {"amount": amount},
                )
                await client.send(order)
                print(f"orders: sent order {order.id} for customer {customer}: {amount}")
            await asyncio.wait_for(all_acked.wait(), 5)
            print(f"orders: all {len(acked)} orders acknowledged (RECEIVED)")
            for customer in ("7", "42"):
                reply = await client.request(
                    distro.message({"uri": f"/customer/{customer}", "verb": "GET"}), timeout=5
                )
                print(f"orders: customer {customer} total is {reply.payload['total']}")
                expected = sum(a for c, a in ORDERS if c == customer)
                if reply.payload["total"] != expected:
                    print(f"MISMATCH: expected {expected}", file=sys.stderr)
                    return 1
    print(f"customers service stats: {customers.stats}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transport", nargs="?", default="udp4", help="transport name (udp4)")
    args = parser.parse_args()
    try:
        sys.exit(asyncio.run(main(args.transport)))
    except distro.TransportNotFound as exc:
        sys.exit(f"error: {exc}")
