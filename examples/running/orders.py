"""The orders service: takes orders and tells the customers service about each."""

import distro_core as distro

service = distro.Service("orders")
clients = {}


@service.on_startup
async def connect():
    # The server listens already. A tcp client waits up to connect_timeout (5 s) for the
    # customers service, so which service starts first does not matter.
    clients["customers"] = await service.connect(port=8001)


@service.post("/order")
async def place(msg):
    order = msg.payload
    added = distro.message(
        {"uri": f"/customer/{order['customer']}/orders", "verb": "POST"},
        {"amount": order["amount"]},
    )
    reply = await clients["customers"].request(added, timeout=2.0)
    return {"order": "placed", "customer": order["customer"], "total": reply.payload["total"]}
