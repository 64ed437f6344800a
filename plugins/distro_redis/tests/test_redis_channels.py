"""Channel naming and subscription plans (pure), and the exactly-once choice among overlapping
subscriptions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from distro_redis._channels import (
    Subscriptions,
    ack_channel,
    catch_all_patterns,
    glob_escape,
    glob_regex,
    message_channel,
    plan,
    reply_channel,
    route_subscription,
)
from hypothesis import given
from hypothesis import strategies as st

import distro_core as distro
from distro_core.transport import RouteInfo


def routes(*pairs: tuple[str, str]) -> Sequence[RouteInfo]:
    """The routes as the core hands them to a transport (with their parsed segments): those of
    a server with these ``(verb, pattern)`` routes."""
    server = distro.create("memory").server()
    for verb, pattern in pairs:
        server.route(verb, pattern, lambda msg: None)
    return server.routes


def test_a_message_goes_on_its_upper_cased_uri_and_verb() -> None:
    assert message_channel("", "/customer/7", "POST") == b"/CUSTOMER/7.POST"
    assert message_channel("shop:", "/Orders/Ab", "DELETE") == b"shop:/ORDERS/AB.DELETE"


def test_a_message_without_verb_goes_on_the_get_channel() -> None:
    assert message_channel("", "/customer/7", None) == b"/CUSTOMER/7.GET"


def test_a_message_channel_upper_cases_what_routing_compares() -> None:
    # The Kelvin sign routes like "k" (the core lower-cases), so it goes on the "/K" channel.
    assert message_channel("", "/\u212a", "GET") == b"/K.GET"
    [route] = routes(("GET", "/k"))
    assert route_subscription("", route) == (False, b"/K.GET")


def test_a_route_without_parameters_is_a_channel_subscription() -> None:
    [route] = routes(("PUT", "/Orders/Open"))
    assert route_subscription("p:", route) == (False, b"p:/ORDERS/OPEN.PUT")


def test_a_route_with_parameters_is_a_pattern_with_escaped_literals() -> None:
    [route] = routes(("GET", "/files*/{name}/v[1]?"))
    is_pattern, pattern = route_subscription("a*b:", route)
    assert is_pattern
    assert pattern == rb"a\*b:/FILES\*/*/V\[1\]\?.GET"
    regex = glob_regex(pattern)
    assert regex.fullmatch(b"a*b:/FILES*/readme/V[1]?.GET")
    assert not regex.fullmatch(b"a*b:/FILESX/readme/V[1]?.GET")
    assert not regex.fullmatch(b"axb:/FILES*/readme/V[1]?.GET")
    assert not regex.fullmatch(b"a*b:/FILES*/readme/V1X.GET")


def test_control_channels_end_in_no_verb() -> None:
    assert ack_channel("p:", 4242) == b"p:distro.ack.4242"
    assert reply_channel("p:", "ab12") == "p:distro.reply.ab12"
    for pattern in catch_all_patterns("p:"):
        regex = glob_regex(pattern)
        assert not regex.fullmatch(ack_channel("p:", 4242))
        assert not regex.fullmatch(reply_channel("p:", "ab12").encode())


def test_a_catch_all_replaces_route_subscriptions() -> None:
    both = routes(("GET", "/a"), ("POST", "/b/{id}"))
    assert plan("", both, catch_all=False) == (
        frozenset({b"/A.GET"}),
        frozenset({b"/B/*.POST"}),
    )
    channels, patterns = plan("x:", both, catch_all=True)
    assert channels == frozenset()
    verbs = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
    assert patterns == {f"x:*.{verb}".encode() for verb in verbs}


@given(st.text(max_size=30))
def test_an_escaped_text_matches_itself_only(text: str) -> None:
    regex = glob_regex(glob_escape(text).encode())
    assert regex.fullmatch(text.encode())
    assert not regex.fullmatch(text.encode() + b"x")


def _subscriptions(channels: frozenset[bytes], patterns: frozenset[bytes]) -> Subscriptions:
    subs = Subscriptions()
    for name in channels:
        subs.confirmed(b"subscribe", name)
    for name in patterns:
        subs.confirmed(b"psubscribe", name)
    return subs


def _deliveries(subs: Subscriptions, channel: bytes) -> int:
    """How many times a server takes a message on ``channel``: Redis pushes it once per
    matching subscription (see redis pubsub.c); the server takes those it owns."""
    taken = 1 if channel in subs.channels else 0
    for pattern in subs.patterns:
        if glob_regex(pattern).fullmatch(channel) and subs.owns(pattern, channel):
            taken += 1
    return taken


segment = st.sampled_from(["a", "b", "B", "{x}", "{y}", "c*", "[d]"])
route = st.builds(
    lambda verb, parts: (verb, "/" + "/".join(_unique_params(parts))),
    st.sampled_from(["GET", "POST"]),
    st.lists(segment, min_size=1, max_size=3),
)
"""A ``(verb, pattern)`` pair."""


def _unique_params(parts: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for part in parts:
        if part.startswith("{"):
            part = f"{{p{len(seen)}}}"
            seen.add(part)
        out.append(part)
    return out


@given(
    st.lists(route, max_size=5),
    st.booleans(),
    st.lists(st.sampled_from(["a", "b", "c*", "[d]", "zz"]), min_size=1, max_size=3),
    st.sampled_from(["GET", "POST"]),
)
def test_a_message_is_taken_once_when_it_matches_and_never_otherwise(
    pairs: list[tuple[str, str]], catch_all: bool, uri_parts: list[str], verb: str
) -> None:
    channels, patterns = plan("p:", routes(*pairs), catch_all)
    subs = _subscriptions(channels, patterns)
    channel = message_channel("p:", "/" + "/".join(uri_parts), verb)
    matched = channel in channels or any(glob_regex(p).fullmatch(channel) for p in patterns)
    assert _deliveries(subs, channel) == (1 if matched else 0)


@given(st.lists(route, min_size=1, max_size=6), st.data())
def test_a_message_matching_several_routes_is_taken_exactly_once(
    pairs: list[tuple[str, str]], data: Any
) -> None:
    infos = routes(*pairs)
    channels, patterns = plan("p:", infos, catch_all=False)
    subs = _subscriptions(channels, patterns)
    target = data.draw(st.sampled_from(infos))
    fill = st.sampled_from(["a", "b", "zz", "c*"])
    uri = "/".join(data.draw(fill) if s.param else s.text for s in target.segments)
    assert _deliveries(subs, message_channel("p:", uri, target.verb)) == 1


@given(st.lists(route, min_size=1, max_size=5), st.lists(route, max_size=3))
def test_during_a_change_of_subscriptions_a_message_is_taken_once(
    before: list[tuple[str, str]], added: list[tuple[str, str]]
) -> None:
    old = routes(*before)
    old_channels, old_patterns = plan("p:", old, catch_all=False)
    new_channels, new_patterns = plan("p:", routes(*before, *added), catch_all=True)
    subs = _subscriptions(old_channels | new_channels, old_patterns | new_patterns)
    for r in old:
        channel = message_channel("p:", "/".join(s.text for s in r.segments), r.verb)
        assert _deliveries(subs, channel) == 1


def test_no_owner_check_when_subscriptions_cannot_overlap() -> None:
    subs = _subscriptions(frozenset({b"/A.GET", b"distro.ack.7"}), catch_all_patterns(""))
    assert subs.check  # "/A.GET" and "*.GET" overlap
    subs.confirmed(b"unsubscribe", b"/A.GET")
    assert not subs.check  # six catch-all patterns, one per verb, and a control channel
    assert subs.owns(b"*.GET", b"/A.GET")
    subs.reset()
    assert not subs.channels and not subs.patterns


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        (rb"a\*", b"a*", True),
        (rb"a\*", b"ab", False),
        (b"a?c", b"abc", True),
        (b"a[bc]d", b"acd", True),
        (b"a[^bc]d", b"acd", False),
        (b"a[", b"a[", True),
    ],
)
def test_glob_regex_follows_redis_globs(pattern: bytes, channel: bytes, matches: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(channel)) is matches
