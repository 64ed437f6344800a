"""The plugin as installed: found by entry point, never imported by the core, version-checked."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
import types

import distro_redis
import pytest
from distro_redis import RedisTransport, StreamsTransport

import distro_core as distro
from distro_core import transport as kit


def test_the_entry_point_names_the_plugin_module() -> None:
    [entry] = [
        ep
        for ep in importlib.metadata.entry_points(group=kit.ENTRY_POINT_GROUP)
        if ep.name == "redis"
    ]
    assert entry.value == "distro_redis"
    assert entry.dist is not None and entry.dist.name == "distro-redis"


def test_create_finds_redis_without_an_import_and_the_core_never_imports_it() -> None:
    script = textwrap.dedent("""
        import sys
        import distro_core as distro
        distro.create("memory")
        assert "distro_redis" not in sys.modules, "the core imported the plugin"
        factory = distro.create("redis")
        assert factory.transport.__module__.startswith("distro_redis")
        info = distro.transports()["redis"]
        print(info.distribution, info.plugin)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["distro-redis", "redis"]


def test_the_public_names_are_exactly_all() -> None:
    public = {name for name in vars(distro_redis) if not name.startswith("_")}
    public -= {"annotations", "kit"}
    assert sorted(distro_redis.__all__) == distro_redis.__all__
    assert public == set(distro_redis.__all__)


def test_the_transport_declares_the_contract_version_it_was_written_for() -> None:
    assert RedisTransport.api_version == StreamsTransport.api_version == kit.API_VERSION == 2
    assert distro_redis.distro_register_transports() == [RedisTransport, StreamsTransport]


class _FutureRedis(RedisTransport):
    api_version = kit.API_VERSION + 1


def test_a_transport_for_another_api_version_is_a_clear_plugin_error() -> None:
    with pytest.raises(distro.PluginError, match="transport API version") as info:
        distro.create(_FutureRedis)
    assert "redis" in str(info.value)

    plugin = types.SimpleNamespace(distro_register_transports=lambda: [_FutureRedis])
    plugin.distro_register_transports = kit.hookimpl(plugin.distro_register_transports)
    with pytest.raises(distro.PluginError, match=f"version {kit.API_VERSION + 1}"):
        distro.create(plugin)


def test_a_registry_skips_a_mismatched_transport_with_a_warning() -> None:
    registry = kit.Registry(entry_points=False)
    plugin = types.ModuleType("future_redis")
    plugin.distro_register_transports = kit.hookimpl(lambda: [_FutureRedis])  # type: ignore[attr-defined]
    registry.register(plugin, name="future-redis")
    with (
        pytest.warns(kit.PluginWarning, match="transport API version"),
        pytest.raises(distro.TransportNotFound),
    ):
        distro.create("redis", registry=registry)
