"""Prometheus metrics (distro_core.middleware.Metrics; ``distro run --metrics-port``): what a
server and a client count and time, read by scraping the HTTP endpoint."""

from __future__ import annotations

import asyncio
import textwrap
import urllib.request
from pathlib import Path

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from _cli import free_port, running  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import distro_core as distro  # noqa: E402
from distro_core.middleware import Metrics  # noqa: E402
from distro_core.testing import wait_until  # noqa: E402

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_server_and_client_metrics_scraped() -> None:
    registry = prometheus_client.CollectorRegistry()
    httpd, thread = prometheus_client.start_http_server(0, "127.0.0.1", registry=registry)
    try:
        factory = distro.create("tcp")
        server = factory.server(port=0, middleware=[Metrics(registry, transport="tcp")])
        server.post("/orders/{id}", lambda msg: msg.params["id"])
        server.post("/fail", lambda msg: 1 / 0)
        async with server:
            where = {"address": server.address[0], "port": server.address[1]}
            mw = [Metrics(registry, transport="tcp")]
            async with factory.client(where, middleware=mw) as client:
                for i in range(5):
                    await client.request(distro.message({"uri": f"/orders/{i}", "verb": "POST"}))
                with pytest.raises(distro.RemoteError):
                    await client.request(distro.message({"uri": "/fail", "verb": "POST"}))
                with pytest.raises(distro.RemoteError):
                    await client.request(distro.message({"uri": "/nowhere", "verb": "POST"}))
                await client.send(distro.message({"uri": "/orders/9", "verb": "POST"}))
                await wait_until(lambda: server.stats.handled == 7, what="every message")
            samples = await asyncio.get_running_loop().run_in_executor(
                None, scrape, httpd.server_port
            )
    finally:
        httpd.shutdown()
        thread.join(5)
    tcp = {"transport": "tcp"}
    assert value(samples, "distro_messages_received_total", **tcp) == 8
    route = {**tcp, "route": "/orders/{id}"}
    assert value(samples, "distro_messages_handled_total", **route, outcome="handled") == 6
    assert (
        value(samples, "distro_messages_handled_total", **tcp, route="/fail", outcome="failed") == 1
    )
    assert value(samples, "distro_messages_dropped_total", **tcp, reason="no_route") == 1
    assert value(samples, "distro_handler_duration_seconds_count", **route) == 6
    assert value(samples, "distro_handlers_in_flight", **tcp) == 0
    assert value(samples, "distro_client_requests_total", **tcp, kind="request", outcome="ok") == 5
    assert (
        value(
            samples, "distro_client_requests_total", **tcp, kind="request", outcome="handler_error"
        )
        == 1
    )
    assert (
        value(samples, "distro_client_requests_total", **tcp, kind="request", outcome="no_handler")
        == 1
    )
    assert value(samples, "distro_client_requests_total", **tcp, kind="send", outcome="ok") == 1
    assert (
        value(samples, "distro_client_request_duration_seconds_count", **tcp, kind="request") == 7
    )


async def test_in_flight_counts_handlers_running() -> None:
    registry = prometheus_client.CollectorRegistry()
    factory = distro.create("memory")
    server = factory.server(port=0, middleware=[Metrics(registry)])
    release = asyncio.Event()

    @server.post("/slow")
    async def slow(msg: distro.Message) -> None:
        await release.wait()

    def in_flight() -> float:
        return registry.get_sample_value("distro_handlers_in_flight", {"transport": ""}) or 0

    async with server, factory.client(port=server.address[1]) as client:
        for _ in range(3):
            await client.send(distro.message({"uri": "/slow", "verb": "POST"}))
        await wait_until(lambda: in_flight() == 3, what="three handlers running")
        release.set()
        await wait_until(lambda: in_flight() == 0, what="none running")


SERVICE = textwrap.dedent(
    """
    import distro_core as distro

    service = distro.Service("svc", transport="tcp")

    @service.post("/echo/{name}")
    def echo(msg):
        return msg.params["name"]
    """
)


def test_distro_run_serves_metrics(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SERVICE)
    port, metrics_port = free_port(), free_port()
    args = ["run", "app:service", "--option", f"port={port}", "--metrics-port", str(metrics_port)]
    with running(args, tmp_path, "metrics") as proc:
        proc.wait_for("metrics on")
        proc.wait_for("serving")
        with distro.create("tcp").sync_client(port=port) as client:
            for name in ("a", "b", "c"):
                assert (
                    client.request(distro.message({"uri": f"/echo/{name}", "verb": "POST"})).payload
                    == name
                )
        samples = scrape(metrics_port)
        assert proc.stop() == 0
    labels = {"transport": "tcp", "route": "/echo/{name}", "outcome": "handled"}
    assert value(samples, "distro_messages_handled_total", **labels) == 3
    assert value(samples, "distro_messages_received_total", transport="tcp") == 3


def test_distro_run_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    from _cli import distro as run_distro

    (tmp_path / "app.py").write_text(SERVICE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = run_distro(
            "run", "app:service", "--option", "port=0", "--metrics-port", str(busy), cwd=tmp_path
        )
    assert result.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{busy}" in result.stderr
    assert "Traceback" not in result.stderr
