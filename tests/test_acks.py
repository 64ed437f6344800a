"""The Acknowledger alone: where a server may send RECEIVED, and the links it keeps to send it.

A small recording transport stands in for a real one, so that the links' opening, reuse,
failure and closing can be seen (a real transport's links show none of that from outside).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import distro_core as distro
from distro_core import transport as kit
from distro_core._acks import MAX_LINKS, Acknowledger, normalise


class _Link(kit.Connection):
    reply_to = "recorded"

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.sent: list[distro.Message] = []
        self.closed = False
        self.broken = False
        self.close_fails = False

    async def send(self, data: bytes, message: distro.Message) -> None:
        if self.broken:
            raise distro.ConnectionError(f"link to {self.target} broke")
        assert data == message.to_bytes()
        self.sent.append(message)

    async def aclose(self) -> None:
        self.closed = True
        if self.close_fails:
            raise distro.ConnectionError(f"link to {self.target} broke while closing")


class _Recording(kit.Transport):
    """Opens a recorded link per ``connect``; ports in :attr:`unreachable` refuse."""

    name = "recording"
    api_version = kit.API_VERSION

    def __init__(self) -> None:
        self.links: list[_Link] = []
        self.unreachable: set[int] = set()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> _Recording:
        kit.Options(cls.name, options).finish()
        return cls()

    async def listen(self, receiver: kit.Receiver) -> kit.Listener:
        raise NotImplementedError("acknowledgements only connect")

    async def connect(
        self, receiver: kit.ClientReceiver, target: tuple[str, int] | None = None
    ) -> kit.Connection:
        if target is not None and target[1] in self.unreachable:
            raise distro.ConnectionError(f"nothing at {target}")
        link = _Link(target)
        self.links.append(link)
        return link

    def open_links(self) -> list[_Link]:
        return [link for link in self.links if not link.closed]


class _Sender(kit.Peer):
    def send(self, data: bytes, reply_to: str) -> None:
        raise AssertionError("an acknowledgement is not a reply")


def order() -> distro.Message:
    return distro.message({"uri": "/order", "verb": "POST"}, {"item": 1})


def assert_acknowledges(link: _Link, *messages: distro.Message) -> None:
    assert [m.headers for m in link.sent] == [{"uri": "RECEIVED"}] * len(messages)
    assert [m.payload for m in link.sent] == [{"msgId": m.id} for m in messages]


# -- the links ------------------------------------------------------------------------------


async def test_one_link_per_target_is_opened_and_reused() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    peer = _Sender("10.0.0.7")
    first, second = order(), order()
    assert await acks.send(first, ("10.0.0.7", 4000), peer) is None
    assert await acks.send(second, ("10.0.0.7", 4000), peer) is None
    [link] = transport.links
    assert link.target == ("10.0.0.7", 4000)
    assert_acknowledges(link, first, second)


async def test_past_max_links_the_oldest_link_is_closed_and_at_most_max_links_stay_open() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    peer = _Sender("10.0.0.7")
    for port in range(1, MAX_LINKS + 2):
        assert await acks.send(order(), ("10.0.0.7", port), peer) is None
    assert len(transport.links) == MAX_LINKS + 1
    assert transport.links[0].closed, "the oldest link is evicted and closed"
    assert len(transport.open_links()) == MAX_LINKS
    # The evicted target still gets its acknowledgement, over a new link.
    again = order()
    assert await acks.send(again, ("10.0.0.7", 1), peer) is None
    assert len(transport.links) == MAX_LINKS + 2
    assert_acknowledges(transport.links[-1], again)
    assert len(transport.open_links()) == MAX_LINKS
    await acks.aclose()
    assert transport.open_links() == []


async def test_an_evicted_link_that_fails_to_close_does_not_fail_the_acknowledgement() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=True)
    peer = _Sender("10.0.0.7")
    for port in range(1, MAX_LINKS + 1):
        assert await acks.send(order(), ("10.0.0.7", port), peer) is None
    transport.links[0].close_fails = True
    transport.links[1].close_fails = True
    msg = order()
    assert await acks.send(msg, ("10.0.0.7", MAX_LINKS + 1), peer) is None
    assert_acknowledges(transport.links[-1], msg)
    await acks.aclose()  # the other failing close is quiet too
    assert transport.open_links() == []


async def test_a_link_that_fails_is_dropped_and_reported_ack_failed() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    peer = _Sender("10.0.0.7")
    assert await acks.send(order(), ("10.0.0.7", 4000), peer) is None
    transport.links[0].broken = True
    msg = order()
    failure = await acks.send(msg, ("10.0.0.7", 4000), peer)
    assert failure is not None
    reason, detail = failure
    assert reason == "ack_failed"
    assert msg.id in detail and "10.0.0.7:4000" in detail and "broke" in detail
    # Dropped: the next acknowledgement to that target opens a new link.
    later = order()
    assert await acks.send(later, ("10.0.0.7", 4000), peer) is None
    assert len(transport.links) == 2
    assert_acknowledges(transport.links[1], later)


async def test_a_target_that_cannot_be_reached_is_reported_ack_failed_and_nothing_kept() -> None:
    transport = _Recording()
    transport.unreachable.add(4001)
    acks = Acknowledger(transport, any_address=False)
    peer = _Sender("10.0.0.7")
    msg = order()
    assert await acks.send(msg, ("10.0.0.7", 4001), peer) == (
        "ack_failed",
        f"RECEIVED for {msg.id} to 10.0.0.7:4001: nothing at ('10.0.0.7', 4001)",
    )
    assert transport.links == []


# -- where acknowledgements may go ------------------------------------------------------------


async def test_a_target_that_is_not_the_sender_is_refused_ack_refused() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    msg = order()
    failure = await acks.send(msg, ("127.0.0.2", 4000), _Sender("127.0.0.1"))
    assert failure is not None
    reason, detail = failure
    assert reason == "ack_refused"
    assert msg.id in detail and "127.0.0.2:4000" in detail and "ack_any_address" in detail
    assert transport.links == [], "nothing is sent to a third party"


async def test_a_sender_of_unknown_address_is_refused() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    failure = await acks.send(order(), ("127.0.0.1", 4000), _Sender(None))
    assert failure is not None and failure[0] == "ack_refused"
    assert transport.links == []


async def test_any_address_accepts_a_target_that_is_not_the_sender() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=True)
    msg = order()
    assert await acks.send(msg, ("127.0.0.2", 4000), _Sender("127.0.0.1")) is None
    assert await acks.send(order(), ("127.0.0.3", 4000), _Sender(None)) is None
    assert [link.target for link in transport.links] == [("127.0.0.2", 4000), ("127.0.0.3", 4000)]
    assert_acknowledges(transport.links[0], msg)


@pytest.mark.parametrize(
    ("target", "sender"),
    [
        ("localhost", "127.0.0.1"),  # a name that resolves to the sender
        ("LOCALHOST", "127.0.0.1"),
        ("127.0.0.1", "::ffff:127.0.0.1"),  # an IPv4 sender seen on a dual-stack socket
        ("::ffff:127.0.0.1", "127.0.0.1"),
    ],
)
async def test_a_target_that_is_the_sender_written_another_way_is_accepted(
    target: str, sender: str
) -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    msg = order()
    assert await acks.send(msg, (target, 4000), _Sender(sender)) is None
    [link] = transport.links
    assert link.target == (target, 4000)
    assert_acknowledges(link, msg)


async def test_a_name_that_does_not_resolve_is_refused_not_raised() -> None:
    transport = _Recording()
    acks = Acknowledger(transport, any_address=False)
    failure = await acks.send(order(), ("no-such-host.invalid", 4000), _Sender("127.0.0.1"))
    assert failure is not None and failure[0] == "ack_refused"
    assert transport.links == []


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::FFFF:10.1.2.3", "10.1.2.3"),
        ("fe80::1%eth0", "fe80::1"),
        ("FE80::0:1%2", "fe80::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("Orders.Example.COM", "orders.example.com"),
    ],
)
def test_normalise_gives_the_canonical_text(host: str, canonical: str) -> None:
    assert normalise(host) == canonical
