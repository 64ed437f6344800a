"""distro-zmq as a plugin: found by entry point, options checked, endpoints written right."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import distro_zmq
import pytest
from distro_zmq import _options
from hypothesis import given
from hypothesis import strategies as st

import distro_core as distro
from distro_core import transport as kit


def _settings(options: dict[str, object]) -> _options.ZmqOptions:
    """The checked options, read as ``ZmqTransport.from_options`` reads them."""
    opts = kit.Options("zmq", options)
    settings = _options.read_options(opts)
    opts.finish()
    return settings


def test_create_finds_zmq_by_entry_point_without_an_import() -> None:
    # A fresh interpreter: the core must not import the plugin until the name is asked for.
    script = textwrap.dedent("""
        import sys
        import distro_core as distro
        distro.create("memory")
        assert "distro_zmq" not in sys.modules, "the core imported the plugin"
        factory = distro.create("zmq")
        assert "distro_zmq" in sys.modules
        print(factory.transport.__module__, distro.transports()["zmq"].distribution)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["distro_zmq._transport", "distro-zmq"]


def test_a_fresh_registry_lists_zmq_from_its_distribution() -> None:
    info = kit.Registry().get("zmq")
    assert info.transport is distro_zmq.ZmqTransport
    assert info.distribution == "distro-zmq"
    assert info.transport.api_version == kit.API_VERSION == 2


def test_capabilities_are_declared() -> None:
    caps = distro_zmq.ZmqTransport.capabilities
    assert (caps.ordered, caps.reliable, caps.request_reply, caps.acknowledgements) == (
        True,
        True,
        True,
        True,
    )
    assert not caps.fan_out
    assert caps.cross_process
    assert caps.max_message_size == 1024 * 1024


def test_a_max_message_size_option_changes_that_instances_limit_only() -> None:
    factory = distro.create("zmq")
    small = factory.server(max_message_size=1000)
    assert small.transport.capabilities.max_message_size == 1000
    assert factory.server().transport.capabilities.max_message_size == 1024 * 1024
    assert distro_zmq.ZmqTransport.capabilities.max_message_size == 1024 * 1024


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"colour": "red"}, TypeError, "colour"),
        ({"port": -1}, ValueError, "port"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": "80"}, ValueError, "port"),
        ({"address": ""}, ValueError, "address"),
        ({"address": "tcp://127.0.0.1:5"}, ValueError, "endpoint="),
        ({"endpoint": "udp://x:1"}, ValueError, "tcp://"),
        ({"endpoint": "tcp://127.0.0.1:5", "port": 5}, ValueError, "port"),
        ({"max_message_size": 0}, ValueError, "max_message_size"),
        ({"hwm": 0}, ValueError, "hwm"),
        ({"send_timeout": -1}, ValueError, "send_timeout"),
        ({"send_timeout": True}, ValueError, "send_timeout"),
        ({"connect_timeout": 0}, ValueError, "connect_timeout"),
        ({"connect_timeout": -1}, ValueError, "connect_timeout"),
        ({"connect_timeout": float("inf")}, ValueError, "connect_timeout"),
        ({"connect_timeout": "5"}, ValueError, "connect_timeout"),
        ({"linger": 11}, ValueError, "linger"),
        ({"context": object()}, TypeError, "zmq.Context"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(
    options: dict[str, object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        distro.create("zmq").server(**options)


async def test_a_client_without_a_port_is_refused_at_open() -> None:
    client = distro.create("zmq").client(address="127.0.0.1")
    with pytest.raises(ValueError, match="needs the server's address and port"):
        await client.open()


@pytest.mark.parametrize(
    ("options", "endpoint"),
    [
        ({}, "tcp://127.0.0.1:*"),
        ({"port": 5555}, "tcp://127.0.0.1:5555"),
        ({"address": "::1", "port": 7}, "tcp://[::1]:7"),
        ({"address": "*"}, "tcp://*:*"),
        ({"endpoint": "ipc:///tmp/x.sock"}, "ipc:///tmp/x.sock"),
        ({"address": "ipc:///tmp/y.sock", "port": 0}, "ipc:///tmp/y.sock"),
    ],
)
def test_server_endpoints(options: dict[str, object], endpoint: str) -> None:
    assert _options.server_endpoint(_settings(options)) == endpoint


def test_client_endpoints_and_targets() -> None:
    opts = _settings({"address": "localhost", "port": 9})
    assert _options.client_endpoint(opts) == "tcp://localhost:9"
    assert _options.client_endpoint(opts, ("::1", 80)) == "tcp://[::1]:80"
    assert _options.client_endpoint(opts, ("ipc:///tmp/s", 0)) == "ipc:///tmp/s"
    with pytest.raises(ValueError):
        _options.client_endpoint(opts, ("127.0.0.1", 0))
    with pytest.raises(ValueError):
        _options.client_endpoint(_settings({}))


def test_address_of_bound_endpoints() -> None:
    assert _options.address_of("tcp://127.0.0.1:5555") == ("127.0.0.1", 5555)
    assert _options.address_of("tcp://[::1]:80") == ("::1", 80)
    assert _options.address_of("ipc:///run/a.sock") == ("ipc:///run/a.sock", 0)
    for bad in ("udp://x:1", "tcp://host", "tcp://host:x"):
        with pytest.raises(ValueError):
            _options.address_of(bad)


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
)


@given(hosts, st.integers(1, 65535))
def test_the_address_a_client_is_given_connects_back_to_the_same_endpoint(
    host: str, port: int
) -> None:
    endpoint = _options.client_endpoint(_settings({"address": host, "port": port}))
    assert _options.address_of(endpoint) == (host, port)
