"""distro's conformance kit over the pigeon transport, as installed (found by entry point)."""

from __future__ import annotations

import asyncio
import importlib.metadata

import pytest

import distro_core as distro
from distro_core.testing import TransportSuite

try:
    importlib.metadata.distribution("distro-pigeon")
except importlib.metadata.PackageNotFoundError:
    # These tests are about the installed plugin; distro's own suite installs it into a fresh
    # virtual environment and runs this module there (tests/test_plugin_install.py).
    pytest.skip(
        "distro-pigeon is not installed in this environment; "
        "tests/test_plugin_install.py runs this module where it is",
        allow_module_level=True,
    )


class TestPigeon(TransportSuite):
    transport = "pigeon"


# -- what the kit does for pigeon: options, error mapping -------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"colour": "red"}, TypeError, "colour"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": "1"}, ValueError, "port"),
        ({"address": ""}, ValueError, "address"),
        ({"address": 7}, ValueError, "address"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    options: dict[str, object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text):
        distro.create("pigeon").server(**options)


def test_nothing_listening_is_a_connection_error_from_the_os_error() -> None:
    async def attempt() -> None:
        factory = distro.create("pigeon")
        async with factory.server(port=0) as server:
            roost, _ = server.address
        client = factory.client(address=roost, port=1)  # no socket file for port 1
        await client.open()

    with pytest.raises(distro.ConnectionError, match="cannot connect") as info:
        asyncio.run(attempt())
    assert isinstance(info.value.__cause__, OSError)


def test_a_taken_port_is_address_in_use() -> None:
    async def attempt() -> int:
        factory = distro.create("pigeon")
        async with factory.server(port=0) as first:
            roost, port = first.address
            with pytest.raises(distro.AddressInUse, match=f"{port}.sock"):
                await factory.server(address=roost, port=port).start()
        return port

    assert asyncio.run(attempt()) > 0


# -- the framing, which is pure code: whole buffers, byte by byte, trailing data --------------

from distro_pigeon._frames import FrameDecoder, Oversized, encode  # noqa: E402

FRAMES = [b'{"a":1}', b"", b"x" * 300, "Zoë 🚀".encode()]
STREAM = b"".join(encode(f) for f in FRAMES)


def test_decoder_takes_a_whole_stream_at_once() -> None:
    decoder = FrameDecoder(1000)
    assert decoder.feed(STREAM) == FRAMES
    assert decoder.pending == 0


def test_decoder_takes_a_stream_byte_by_byte() -> None:
    decoder = FrameDecoder(1000)
    out = [frame for i in range(len(STREAM)) for frame in decoder.feed(STREAM[i : i + 1])]
    assert out == FRAMES
    assert decoder.pending == 0


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 10, 12, len(STREAM) - 1])
def test_decoder_holds_an_unfinished_frame_until_the_rest_comes(cut: int) -> None:
    decoder = FrameDecoder(1000)
    first = decoder.feed(STREAM[:cut])
    assert decoder.pending > 0
    assert first + decoder.feed(STREAM[cut:]) == FRAMES


def test_decoder_skips_an_oversized_frame_without_buffering_it() -> None:
    decoder = FrameDecoder(10)
    big = encode(b"y" * 5000)
    assert decoder.feed(big[:100]) == [Oversized(5000)]
    assert decoder.pending == 5000 - 96  # still to skip, never held in memory
    assert decoder.feed(big[100:] + encode(b"ok")) == [b"ok"]
    assert decoder.pending == 0
