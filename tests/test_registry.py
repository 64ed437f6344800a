"""Finding transports: create(), the registry, entry-point plugins and what goes wrong with them.

Each test uses a fresh :class:`distro_core.transport.Registry`. Plugins found by entry point
come from real
distributions made in a temporary directory (a ``*.dist-info`` with METADATA and
entry_points.txt beside the plugin module) put on ``sys.path``, which is how
``importlib.metadata`` finds an installed package.
"""

from __future__ import annotations

import abc
import itertools
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core._transports.memory import MemoryTransport
from distro_core.testing import Recorder, wait_until

BUNDLED = {"memory", "udp4", "udp6", "tcp"}

# A working transport (the memory one under another name) in a plugin module of its own.
PLUGIN = """
from distro_core import transport as kit
from distro_core._transports.memory import MemoryTransport

class {cls}(MemoryTransport):
    name = {name!r}

@kit.hookimpl
def distro_register_transports():
    return [{cls}]
"""

MakeDistribution = Callable[..., list[str]]
_unique = itertools.count()


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeDistribution:
    """Make an installed distribution with ``distro.transports`` entry points.

    Called as ``make_distribution("distro-x", {"x": module_source})``; returns the module
    names, which are forgotten again (``sys.modules``, ``sys.path``) after the test.
    """

    def make(dist: str, plugins: dict[str, str]) -> list[str]:
        root = tmp_path / f"site-{dist}"
        info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = [f"[{kit.ENTRY_POINT_GROUP}]"]
        modules = []
        for ep_name, source in plugins.items():
            module = f"distro_test_plugin_{next(_unique)}"
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            lines.append(f"{ep_name} = {module}")
            monkeypatch.delitem(sys.modules, module, raising=False)
            modules.append(module)
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(root))
        return modules

    return make


def plugin_source(name: str) -> str:
    """A plugin module giving a working transport called ``name``."""
    return PLUGIN.format(cls=name.capitalize() + "Transport", name=name)


def hook_source(hook: str, body: str) -> str:
    """A plugin module whose ``hook`` function runs ``body``."""
    return f"from distro_core import transport as kit\n\n@kit.hookimpl\ndef {hook}():\n    {body}\n"


class ListLogger:
    """A logger that is not a logging.Logger: it only has ``log``."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args))


async def round_trip(factory: distro.Factory) -> Any:
    """Serve one route over ``factory`` and ask it once; the reply's payload."""
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    server.get("/ping/{who}", lambda msg: f"pong {msg.params['who']}")
    async with server, factory.client(port=server.address[1], network=network) as client:
        reply = await client.request(distro.message({"uri": "/ping/ada"}), timeout=5)
    return reply.payload


# -- create() and what it accepts --------------------------------------------------------------


def test_create_needs_a_transport() -> None:
    with pytest.raises(TypeError):
        distro.create()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="needs a transport"):
        distro.create(None)


def test_an_unknown_name_lists_what_is_available_and_how_to_install() -> None:
    registry = kit.Registry(entry_points=False)
    with pytest.raises(distro.TransportNotFound) as info:
        distro.create("carrier-pigeon", registry=registry)
    error = info.value
    assert isinstance(error, LookupError) and isinstance(error, distro.DistroError)
    assert error.name == "carrier-pigeon"
    assert set(error.available) == BUNDLED
    text = str(error)
    assert all(name in text for name in BUNDLED)
    assert "pip install distro-carrier-pigeon" in text


def test_an_unknown_name_with_the_default_registry_lists_the_bundled_transports() -> None:
    with pytest.raises(distro.TransportNotFound) as info:
        distro.create("no-such-transport")
    assert set(info.value.available) >= BUNDLED


class NotATransport:
    name = "fake"


class HalfTransport(kit.Transport, abc.ABC):
    name = "half"
    api_version = kit.API_VERSION

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        raise NotImplementedError


class FromTheFuture(MemoryTransport):
    name = "future"
    api_version = 99


class FromThePast(MemoryTransport):
    name = "past"
    api_version = 1


class Unversioned(kit.Transport):
    """A complete transport that does not declare the contract version it follows."""

    name = "unversioned"

    @classmethod
    def from_options(cls, options: Any) -> Unversioned:
        return cls()

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        raise NotImplementedError

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        raise NotImplementedError


@pytest.mark.parametrize(
    ("transport", "match"),
    [
        (42, "not int"),
        (object(), "not object"),
        (int, "not a distro_core.transport.Transport subclass"),
        (NotATransport, "not a distro_core.transport.Transport subclass"),
        (HalfTransport, "'half' does not implement connect"),
        (FromTheFuture, "version 99.*speaks version 2"),
        (FromThePast, "version 1.*speaks version 2.*Contract version 2"),
        (Unversioned, "does not say which transport contract.*api_version = 2"),
    ],
)
def test_an_object_that_is_no_transport_is_a_clear_type_error(transport: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match) as info:
        distro.create(transport)
    if isinstance(transport, type):
        assert isinstance(info.value, distro.PluginError)


async def test_create_takes_a_transport_class_that_is_registered_nowhere() -> None:
    class Courier(MemoryTransport):
        name = "courier"

    factory = distro.create(Courier)
    assert factory.name == "courier" and factory.transport is Courier
    assert await round_trip(factory) == "pong ada"
    with pytest.raises(distro.TransportNotFound):
        distro.create("courier", registry=kit.Registry(entry_points=False))


class CourierPlugin:
    """A plugin object (not a module): its hook method gives one transport."""

    class Courier(MemoryTransport):
        name = "courier"

    @kit.hookimpl
    def distro_register_transports(self) -> list[type[kit.Transport]]:
        return [self.Courier]


async def test_create_takes_a_plugin_object_with_one_transport() -> None:
    factory = distro.create(CourierPlugin())
    assert factory.transport is CourierPlugin.Courier
    assert await round_trip(factory) == "pong ada"


def test_a_plugin_object_with_several_transports_is_refused() -> None:
    class Two:
        @kit.hookimpl
        def distro_register_transports(self) -> list[type[kit.Transport]]:
            return [CourierPlugin.Courier, MemoryTransport]

    with pytest.raises(distro.PluginError, match="provides 2 transports"):
        distro.create(Two())


# -- loggers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("logger", [object(), "distro", type("NoLog", (), {"log": 1})()])
def test_a_logger_without_a_log_method_is_a_type_error(logger: object) -> None:
    with pytest.raises(TypeError, match="log"):
        distro.create("memory", logger=logger)


async def test_a_logger_gets_the_servers_log_lines_with_the_message_id() -> None:
    logger = ListLogger()
    factory = distro.create("memory", logger=logger)
    assert factory.logger is logger
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    handled = Recorder()

    @server.post("/orders")
    def failing(msg: distro.Message) -> None:
        handled(msg)
        raise ValueError("out of stock")

    async with server, factory.client(port=server.address[1], network=network) as client:
        sent = distro.message({"uri": "/orders", "verb": "POST"}, {"sku": 1})
        await client.send(sent)
        await handled.wait_for(1)
        await wait_until(lambda: server.stats.handler_errors == 1, what="the failure")
    [(level, line)] = [entry for entry in logger.lines if sent.id in entry[1]]
    assert level == logging.ERROR
    assert "out of stock" in line and "failing" in line


def test_a_standard_library_logger_is_taken_as_it_is() -> None:
    logger = logging.getLogger("my.service")
    assert distro.create("memory", logger=logger).logger is logger
    assert distro.create("memory").logger is logging.getLogger("distro")


# -- the registry and plugins found by entry point ---------------------------------------------


def test_transports_lists_the_bundled_ones_as_distro_core() -> None:
    available = distro.transports(registry=kit.Registry(entry_points=False))
    assert set(available) == BUNDLED
    for name, info in available.items():
        assert info.name == name == info.transport.name
        assert info.distribution == "distro-core"
        assert issubclass(info.transport, kit.Transport)
    with pytest.raises(TypeError):
        available["mine"] = available["memory"]  # type: ignore[index]


def test_transports_of_the_default_registry_include_the_bundled_ones() -> None:
    available = distro.transports()
    assert set(available) >= BUNDLED
    assert {available[name].distribution for name in BUNDLED} == {"distro-core"}


async def test_an_installed_plugin_is_found_by_name(make_distribution: MakeDistribution) -> None:
    make_distribution("distro-carrier", {"carrier": plugin_source("carrier")})
    registry = kit.Registry()
    factory = distro.create("carrier", registry=registry)
    assert factory.name == "carrier"
    assert await round_trip(factory) == "pong ada"
    info = distro.transports(registry=registry)["carrier"]
    assert (info.distribution, info.plugin) == ("distro-carrier", "carrier")
    assert info.transport is factory.transport


def test_entry_points_are_loaded_only_when_a_name_is_not_bundled(
    make_distribution: MakeDistribution, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    source = f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n"
    [module] = make_distribution("distro-watched", {"carrier": source + plugin_source("carrier")})
    registry = kit.Registry()
    assert distro.create("memory", registry=registry).name == "memory"
    assert distro.create("tcp", registry=registry).name == "tcp"
    assert not marker.exists() and module not in sys.modules
    assert "carrier" in distro.transports(registry=registry)
    assert marker.read_text() == "yes" and module in sys.modules


def test_importing_distro_and_creating_a_bundled_transport_loads_no_plugin(
    make_distribution: MakeDistribution, tmp_path: Path
) -> None:
    marker = tmp_path / "imported"
    source = f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n"
    make_distribution("distro-watched", {"carrier": source + plugin_source("carrier")})
    script = (
        "import sys, distro_core as distro\n"
        "distro.create('memory')\n"
        "print(sorted(m for m in sys.modules if m.startswith('distro_test_plugin')))\n"
        "print(distro.transports()['carrier'].distribution)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "distro-watched"]
    assert marker.read_text() == "yes"


def test_two_plugins_claiming_one_name_are_refused_naming_both(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("distro-twin-a", {"twin-a": plugin_source("twin")})
    make_distribution("distro-twin-b", {"twin-b": plugin_source("twin")})
    registry = kit.Registry()
    with pytest.raises(distro.DuplicateTransport) as info:
        distro.create("twin", registry=registry)
    assert isinstance(info.value, distro.PluginError) and isinstance(info.value, TypeError)
    assert "distro-twin-a" in str(info.value) and "distro-twin-b" in str(info.value)
    with pytest.warns(kit.PluginWarning, match="'twin' is claimed by") as caught:
        available = distro.transports(registry=registry)
    assert all(dist in str(caught[0].message) for dist in ("distro-twin-a", "distro-twin-b"))
    assert "twin" not in available and "memory" in available


def test_a_plugin_claiming_a_bundled_name_is_ignored_with_a_warning_before_and_after_loading(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("distro-impostor", {"impostor": plugin_source("memory")})
    registry = kit.Registry()
    assert distro.create("memory", registry=registry).transport is MemoryTransport
    with pytest.warns(kit.PluginWarning, match="distro-impostor.*'memory'.*ignored"):
        available = distro.transports(registry=registry)
    assert available["memory"].distribution == "distro-core"
    # Entry points are loaded now; the bundled transport still answers to its name.
    assert distro.create("memory", registry=registry).transport is MemoryTransport


def test_a_plugin_that_fails_to_import_is_named_in_a_warning_and_the_rest_work(
    make_distribution: MakeDistribution,
) -> None:
    make_distribution("distro-broken", {"broken": "raise ImportError('needs libpigeon.so')\n"})
    make_distribution("distro-fine", {"fine": plugin_source("fine")})
    registry = kit.Registry()
    with pytest.warns(kit.PluginWarning) as caught:
        factory = distro.create("fine", registry=registry)
    [warning] = [w for w in caught if "broken" in str(w.message)]
    text = str(warning.message)
    assert "'broken'" in text and "distro-broken" in text and "needs libpigeon.so" in text
    assert factory.name == "fine"
    assert "broken" not in distro.transports(registry=registry)


def test_a_plugin_whose_hook_raises_or_returns_junk_is_skipped_with_a_warning(
    make_distribution: MakeDistribution,
) -> None:
    raising = hook_source("distro_register_transports", "raise RuntimeError('no config')")
    junk = hook_source("distro_register_transports", "return [42]")
    make_distribution("distro-raising", {"raising": raising, "junk": junk})
    registry = kit.Registry()
    with pytest.warns(kit.PluginWarning) as caught:
        available = distro.transports(registry=registry)
    texts = [str(w.message) for w in caught]
    assert any("'raising'" in t and "no config" in t for t in texts), texts
    not_one = "not a distro_core.transport.Transport subclass"
    assert any("'junk'" in t and not_one in t for t in texts), texts
    assert set(available) >= BUNDLED


def test_a_plugin_with_a_misspelt_hook_is_refused(make_distribution: MakeDistribution) -> None:
    misspelt = hook_source("distro_register_transport", "return []")

    class Direct:
        @kit.hookimpl
        def distro_register_transport(self) -> list[type[kit.Transport]]:
            return []

    with pytest.raises(distro.PluginError, match="unknown hook"):
        kit.Registry(entry_points=False).register(Direct())
    make_distribution("distro-misspelt", {"misspelt": misspelt})
    with pytest.warns(kit.PluginWarning, match="'misspelt'.*unknown hook"):
        distro.transports(registry=kit.Registry())


def test_a_transport_for_another_contract_version_is_refused_naming_the_version() -> None:
    class Future:
        @kit.hookimpl
        def distro_register_transports(self) -> list[type[kit.Transport]]:
            return [FromTheFuture]

    registry = kit.Registry(entry_points=False)
    registry.register(Future(), name="future-plugin", distribution="distro-future")
    with (
        pytest.warns(kit.PluginWarning, match="distro-future.*version 99"),
        pytest.raises(distro.TransportNotFound),
    ):
        distro.create("future", registry=registry)
    with pytest.raises(distro.PluginError, match="version 99"):
        distro.create(FromTheFuture)
