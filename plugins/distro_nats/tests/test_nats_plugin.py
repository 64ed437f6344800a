"""The plugin as installed: found by entry point, never imported by the core, version-checked."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import distro_nats
from distro_nats import JetStreamTransport, NatsTransport

from distro_core import transport as kit


def test_the_entry_point_names_the_plugin_module() -> None:
    [entry] = [
        ep
        for ep in importlib.metadata.entry_points(group=kit.ENTRY_POINT_GROUP)
        if ep.name == "nats"
    ]
    assert entry.value == "distro_nats"
    assert entry.dist is not None and entry.dist.name == "distro-nats"


def test_create_finds_nats_without_an_import_and_the_core_never_imports_it() -> None:
    script = textwrap.dedent("""
        import sys
        import distro_core as distro
        distro.create("memory")
        assert "distro_nats" not in sys.modules, "the core imported the plugin"
        factory = distro.create("nats")
        assert factory.transport.__module__.startswith("distro_nats")
        info = distro.transports()["nats"]
        print(info.distribution, info.plugin)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["distro-nats", "nats"]


def test_the_public_names_are_exactly_all() -> None:
    public = {name for name in vars(distro_nats) if not name.startswith("_")}
    public -= {"annotations", "kit", "subjects"}
    assert sorted(distro_nats.__all__) == distro_nats.__all__
    assert public == set(distro_nats.__all__)


def test_the_transport_declares_the_contract_version_and_capabilities() -> None:
    assert NatsTransport.api_version == kit.API_VERSION == 2
    assert JetStreamTransport.api_version == kit.API_VERSION
    assert distro_nats.distro_register_transports() == [NatsTransport, JetStreamTransport]
    caps = NatsTransport.capabilities
    assert caps.fan_out and caps.groups and caps.request_reply and caps.acknowledgements
    assert not caps.redelivery and not caps.durable
    js = JetStreamTransport.capabilities
    assert js.fan_out and js.groups and js.request_reply and js.acknowledgements
    assert js.redelivery and js.durable
