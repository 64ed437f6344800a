"""The transport authors' kit (distro_core.transport): Options, map_error, FrameInlet and
WriteBatcher, each tested alone; the transports that use them run the conformance suite."""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit

# -- Options ----------------------------------------------------------------------------------


def test_options_read_typed_values_and_defaults() -> None:
    opts = kit.Options("demo", {"address": "::1", "port": 80, "timeout": 2, "fast": True})
    assert opts.string("address", "127.0.0.1") == "::1"
    assert opts.port() == 80
    timeout = opts.number("timeout", 5.0, positive=True)
    assert timeout == 2.0 and type(timeout) is float
    assert opts.flag("fast", False) is True
    assert opts.integer("size", 10, minimum=1) == 10  # not given: the default
    given = opts.finish()
    assert dict(given) == {"address": "::1", "port": 80, "timeout": 2, "fast": True}
    with pytest.raises(TypeError):
        given["port"] = 1  # type: ignore[index]  # read-only


def test_options_refuse_unknown_names_all_at_once_saying_what_is_taken() -> None:
    opts = kit.Options("demo", {"port": 1, "prot": 2, "adress": "x"})
    opts.port()
    opts.string("address", "h")
    with pytest.raises(TypeError) as info:
        opts.finish()
    text = str(info.value)
    assert "'demo'" in text and "adress, prot" in text and "it takes address, port" in text


@pytest.mark.parametrize(
    ("read", "value", "match"),
    [
        (lambda o: o.port(), 70000, "'port' must be an integer 0..65535"),
        (lambda o: o.port(), True, "'port' must be an integer"),
        (lambda o: o.integer("port", 1, minimum=1), 0, "an integer >= 1"),
        (lambda o: o.integer("port", 1, minimum=1, maximum=9), 10, ">= 1 and <= 9"),
        (lambda o: o.number("port", 1.0, positive=True), 0, "a positive number"),
        (lambda o: o.number("port", 1.0), float("nan"), "a finite number"),
        (lambda o: o.number("port", 1.0), "1", "a finite number"),
        (lambda o: o.flag("port", False), 1, "True or False"),
        (lambda o: o.string("port", "x"), "", "a non-empty string"),
        (lambda o: o.choice("port", "a", ("a", "b")), "c", "one of 'a', 'b'"),
    ],
)
def test_bad_values_are_value_errors_naming_transport_option_and_value(
    read: Any, value: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match) as info:
        read(kit.Options("demo", {"port": value}))
    assert "demo option 'port'" in str(info.value)


def test_instance_and_custom_checks() -> None:
    opts = kit.Options("demo", {"network": "not one", "ratio": "3"})
    with pytest.raises(TypeError, match="'network' must be a MemoryNetwork, got str"):
        opts.instance("network", distro.MemoryNetwork(), distro.MemoryNetwork)
    assert opts.get("ratio", 1, int) == 3
    with pytest.raises(ValueError, match="demo option 'ratio': invalid literal"):
        kit.Options("demo", {"ratio": "x"}).get("ratio", 1, int)
    with pytest.raises(TypeError, match="must be a mapping"):
        kit.Options("demo", [("port", 1)])  # type: ignore[arg-type]


def test_every_bundled_transport_refuses_unknown_options_through_the_kit() -> None:
    for name in ("memory", "udp4", "udp6", "tcp"):
        with pytest.raises(TypeError, match=f"transport {name!r} got unknown option.*bogus"):
            distro.create(name).server(bogus=1)


# -- map_error --------------------------------------------------------------------------------


class LibraryDown(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.EADDRINUSE, "Address already in use"), distro.AddressInUse),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), distro.ConnectionError),
        (OSError(errno.EHOSTUNREACH, "No route to host"), distro.ConnectionError),
        (TimeoutError("timed out"), distro.ConnectionError),
        (OSError(errno.EACCES, "Permission denied"), distro.TransportError),
        (socket.gaierror(-2, "Name or service not known"), distro.TransportError),
        (ValueError("odd"), distro.TransportError),
    ],
)
def test_map_error_picks_the_most_specific_class(
    exc: BaseException, expected: type[distro.TransportError]
) -> None:
    error = kit.map_error(exc, "demo: connecting to 127.0.0.1:1")
    assert type(error) is expected
    assert str(error).startswith("demo: connecting to 127.0.0.1:1: ")
    assert isinstance(error, distro.DistroError) and isinstance(error, OSError)


def test_map_error_uses_the_library_table_first_and_keeps_distro_errors() -> None:
    table = ((LibraryDown, distro.ConnectionError),)
    error = kit.map_error(LibraryDown("gone"), "lib", table=table)
    assert type(error) is distro.ConnectionError and str(error) == "lib: gone"
    assert type(kit.map_error(LibraryDown(), "lib")) is distro.TransportError
    already = distro.AddressInUse("taken")
    assert kit.map_error(already, "ignored") is already
    custom = kit.map_error(OSError(999, "odd"), "x", unreachable={999})
    assert type(custom) is distro.ConnectionError


# -- FrameInlet -------------------------------------------------------------------------------


class _Peer(kit.Peer):
    def send(self, data: bytes, reply_to: str) -> None:
        raise NotImplementedError


class _Core:
    """A receiver that pauses its inlet after ``pause_after`` frames, as a busy server does."""

    def __init__(self, pause_after: int | None = None) -> None:
        self.frames: list[bytes] = []
        self.pause_after = pause_after
        self.inlet: kit.FrameInlet | None = None

    def frame_received(self, data: bytes, peer: kit.Peer) -> None:
        self.frames.append(data)
        if self.pause_after is not None and len(self.frames) % self.pause_after == 0:
            assert self.inlet is not None
            self.inlet.pause()

    def frame_dropped(self, reason: str, detail: str) -> None:
        raise AssertionError("not expected")

    routes: Any = ()
    has_catch_all = False


def _inlet(pause_after: int | None = None) -> tuple[kit.FrameInlet, _Core]:
    core = _Core(pause_after)
    inlet = core.inlet = kit.FrameInlet(core)
    return inlet, core


def test_inlet_delivers_at_once_when_not_paused() -> None:
    inlet, core = _inlet()
    peer = _Peer("h")
    inlet.deliver(b"1", peer)
    inlet.deliver_all([b"2", b"3"], peer)
    assert core.frames == [b"1", b"2", b"3"] and inlet.held == 0


def test_inlet_holds_the_rest_of_a_chunk_when_the_core_pauses_and_keeps_order() -> None:
    inlet, core = _inlet(pause_after=2)
    peer = _Peer("h")
    inlet.deliver_all([b"%d" % i for i in range(7)], peer)
    assert core.frames == [b"0", b"1"] and inlet.held == 5 and inlet.paused
    inlet.deliver(b"7", peer)  # arrives while paused: behind the held ones
    assert inlet.resume() is False  # the core paused again after two more
    assert core.frames == [b"0", b"1", b"2", b"3"]
    assert inlet.resume() is False
    assert inlet.resume() is False  # the last one paused the core again
    assert core.frames == [b"%d" % i for i in range(8)] and inlet.held == 0
    assert inlet.resume() is True  # nothing held and not paused: reading may resume


def test_inlet_close_discards_and_counts_held_frames_and_takes_no_more() -> None:
    inlet, core = _inlet()
    peer = _Peer("h")
    inlet.pause()
    inlet.deliver_all([b"a", b"b"], peer)
    assert inlet.close() == 2
    inlet.deliver(b"c", peer)
    assert inlet.resume() is False
    assert core.frames == [] and inlet.held == 0


# -- WriteBatcher -----------------------------------------------------------------------------


async def test_batcher_writes_one_iteration_in_one_call() -> None:
    writes: list[list[bytes]] = []
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), writes.append)
    for i in range(5):
        batcher.write(b"%d" % i)
    assert writes == [] and batcher.queued == 5
    await asyncio.sleep(0)  # one loop iteration
    assert writes == [[b"0", b"1", b"2", b"3", b"4"]]
    batcher.write(b"again")
    await asyncio.sleep(0)
    assert writes[-1] == [b"again"]


async def test_batcher_first_frame_goes_out_at_once_the_rest_together() -> None:
    first: list[bytes] = []
    writes: list[list[bytes]] = []
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), writes.append, first=first.append)
    batcher.write(b"a")
    batcher.write(b"b")
    batcher.write_parts((b"c1", b"c2"), 4)
    assert first == [b"a"] and writes == []
    await asyncio.sleep(0)
    assert writes == [[b"b", b"c1", b"c2"]]


async def test_batcher_flushes_early_past_flush_at_and_under_back_pressure() -> None:
    writes: list[list[bytes]] = []
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), writes.append, flush_at=10)
    batcher.write(b"12345")
    batcher.write(b"67890")  # 10 bytes: written now, not at the end of the iteration
    assert writes == [[b"12345", b"67890"]]
    batcher.pause_writing()
    batcher.write(b"x")
    assert writes[-1] == [b"x"]  # the socket buffers; the batcher holds nothing back


async def test_batcher_drain_waits_for_resume_and_fails_when_lost() -> None:
    loop = asyncio.get_running_loop()
    batcher = kit.WriteBatcher(loop, lambda queue: None)
    await batcher.drain()  # not paused: returns at once
    batcher.pause_writing()
    assert batcher.congested
    waiting = asyncio.ensure_future(batcher.drain())
    await asyncio.sleep(0)
    assert not waiting.done()
    batcher.resume_writing()
    await asyncio.wait_for(waiting, 1)
    batcher.pause_writing()
    with pytest.raises(distro.ConnectionError, match=r"took no data for 0\.01s"):
        await batcher.drain(timeout=0.01)
    waiting = asyncio.ensure_future(batcher.drain())
    await asyncio.sleep(0)
    batcher.lost(distro.ConnectionError("gone"))
    with pytest.raises(distro.ConnectionError, match="gone"):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(distro.ConnectionError, match="gone"):
        await batcher.drain()


async def test_batcher_writes_nothing_after_lost() -> None:
    writes: list[list[bytes]] = []
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), writes.append)
    batcher.write(b"queued")
    batcher.lost(distro.ConnectionError("gone"))
    batcher.write(b"late")
    batcher.flush()
    await asyncio.sleep(0)
    assert writes == [] and batcher.error is not None


# -- WriteBatcher: a socket that refuses (write returns how many it took; used by distro-zmq) --


class _Refusing:
    """A ``write`` callback over a socket that takes ``room`` more items, then refuses."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []
        self.calls = 0

    def __call__(self, queue: list[bytes]) -> int | None:
        self.calls += 1
        taken = queue[: self.room]
        self.room -= len(taken)
        self.written += taken
        return None if len(taken) == len(queue) else len(taken)


async def test_batcher_keeps_what_write_refused_in_order_and_writes_it_first_on_resume() -> None:
    sock = _Refusing(room=2)
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), sock)
    for frame in (b"a", b"b", b"c", b"d"):
        batcher.write(frame)
    await asyncio.sleep(0)
    assert sock.written == [b"a", b"b"]
    assert batcher.write_paused and batcher.congested and batcher.queued == 2
    batcher.write(b"e")  # queued behind the refused ones
    batcher.flush()
    await asyncio.sleep(0)
    assert sock.written == [b"a", b"b"] and sock.calls == 1  # nothing tried while refused
    sock.room = 10
    batcher.resume_writing()
    assert sock.written == [b"a", b"b", b"c", b"d", b"e"]
    assert not batcher.write_paused and batcher.queued == 0


async def test_batcher_drain_waits_until_the_refused_frames_are_all_taken() -> None:
    sock = _Refusing(room=0)
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), sock)
    batcher.write(b"a")
    batcher.write(b"b")
    batcher.flush()
    waiting = asyncio.ensure_future(batcher.drain())
    await asyncio.sleep(0)
    sock.room = 1
    batcher.resume_writing()  # takes "a", refuses "b": still paused, the sender waits on
    await asyncio.sleep(0)
    assert sock.written == [b"a"] and batcher.write_paused and not waiting.done()
    sock.room = 1
    batcher.resume_writing()
    await asyncio.wait_for(waiting, 1)
    assert sock.written == [b"a", b"b"]


async def test_batcher_does_not_pass_first_frames_ahead_of_refused_ones() -> None:
    first: list[bytes] = []
    sock = _Refusing(room=0)
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), sock, first=first.append)
    batcher.write(b"lone")  # the iteration's first frame: written at once
    batcher.write(b"a")
    await asyncio.sleep(0)  # "a" is refused
    batcher.write(b"b")  # a new iteration's first frame, but "a" must go before it
    assert first == [b"lone"]
    sock.room = 5
    batcher.resume_writing()
    assert sock.written == [b"a", b"b"]


async def test_batcher_lost_says_how_many_queued_items_it_discarded() -> None:
    sock = _Refusing(room=1)
    batcher = kit.WriteBatcher(asyncio.get_running_loop(), sock)
    for frame in (b"a", b"b", b"c"):
        batcher.write(frame)
    batcher.flush()
    assert batcher.lost(distro.ConnectionError("gone")) == 2
    assert batcher.lost(distro.ConnectionError("again")) == 0
    sock.room = 5
    batcher.resume_writing()  # lost: the refused frames went with the link
    assert sock.written == [b"a"] and sock.calls == 1


async def test_batcher_drain_given_up_leaves_no_unretrieved_error_behind() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        batcher = kit.WriteBatcher(loop, _Refusing(room=0))
        batcher.write(b"a")
        batcher.flush()
        with pytest.raises(distro.ConnectionError, match="took no data"):
            await batcher.drain(timeout=0.01)
        batcher.lost(distro.ConnectionError("gone"))
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


def test_a_bus_peer_publishes_replies_through_its_listener() -> None:
    sent: list[tuple[bytes, str]] = []
    peer = kit.BusPeer("bus-1", lambda data, reply_to: sent.append((data, reply_to)))
    peer.send(b"{}", "replies.7")
    assert sent == [(b"{}", "replies.7")]
    assert peer.host == "bus-1" and not peer.settles and peer.identity is None
