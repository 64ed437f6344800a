"""The customers service: keeps each customer's total of orders."""

import distro_core as distro

service = distro.Service("customers")
totals = {}


@service.post("/customer/{id}/orders")
def add_order(msg):
    customer = msg.params["id"]
    totals[customer] = totals.get(customer, 0) + msg.payload["amount"]
    return {"id": customer, "total": totals[customer]}


@service.get("/customer/{id}")
def read(msg):
    return {"id": msg.params["id"], "total": totals.get(msg.params["id"], 0)}
