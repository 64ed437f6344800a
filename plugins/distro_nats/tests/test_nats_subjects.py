"""The subject mapping (pure): documented examples, and properties over any uri: valid NATS
subjects, no collisions (it reverses), and route subscriptions that match exactly the
messages the core routes to them."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from distro_nats.subjects import (
    Owners,
    ack_subject,
    catch_all_subjects,
    check_prefix,
    escape,
    is_valid_subject,
    matches,
    message_subject,
    plan,
    route_subject,
    unescape,
    uri_of,
)
from hypothesis import assume, example, given
from hypothesis import strategies as st
from nats.aio.client import _validate_subject

import distro_core as distro
from distro_core._routing import Router
from distro_core.transport import RouteInfo

VERBS = sorted(distro.VERBS)


def routes(*pairs: tuple[str, str]) -> Sequence[RouteInfo]:
    """The routes as the core hands them to a transport (with their parsed segments)."""
    server = distro.create("memory").server()
    for verb, pattern in pairs:
        server.route(verb, pattern, lambda msg: None)
    return server.routes


def nats_accepts(subject: str, *, subscription: bool) -> bool:
    """What nats-py's own check says (strict for subscriptions)."""
    try:
        _validate_subject(subject, strict=subscription)
    except Exception:
        return False
    return True


# -- the documented examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "verb", "subject"),
    [
        ("/customer/7", "POST", "distro.POST.customer.7"),
        ("/Customer/7", "POST", "distro.POST.customer.7"),
        ("/customer/7", None, "distro.GET.customer.7"),
        ("/files/a.b", "GET", "distro.GET.files.a%2Eb"),
        ("/Zoë", "GET", "distro.GET.zo%C3%AB"),
        ("/a//b", "GET", "distro.GET.a.%.b"),
        ("/", "GET", "distro.GET.%"),
        ("a/b", "GET", "distro.GET.%%.a.b"),
        ("/x y/*/>/%", "PUT", "distro.PUT.x%20y.%2A.%3E.%25"),
        ("/tab\there", "GET", "distro.GET.tab%09here"),
    ],
)
def test_documented_message_subjects(uri: str, verb: str | None, subject: str) -> None:
    assert message_subject("distro", uri, verb) == subject


def test_route_subjects_use_star_for_parameters_and_a_catch_all_uses_greater_than() -> None:
    [by_id, lines, relative] = routes(
        ("GET", "/Customer/{id}"), ("DELETE", "/orders/{n}/lines"), ("PUT", "a.b/{x}")
    )
    assert route_subject("shop", by_id) == "shop.GET.customer.*"
    assert route_subject("shop", lines) == "shop.DELETE.orders.*.lines"
    assert route_subject("shop", relative) == "shop.PUT.%%.a%2Eb.*"
    assert catch_all_subjects("shop") == {f"shop.{verb}.>" for verb in VERBS}
    assert plan("shop", [by_id], catch_all=True) == catch_all_subjects("shop")
    assert plan("shop", [by_id, lines], catch_all=False) == {
        "shop.GET.customer.*",
        "shop.DELETE.orders.*.lines",
    }
    assert ack_subject("shop", 77) == "shop._ack.77"


def test_a_prefix_may_have_several_tokens_but_no_wildcards() -> None:
    assert check_prefix("shop.eu-1") == "shop.eu-1"
    for bad in ("", "a..b", ".a", "a.*", "a.>", "a b", "é", "a.b*"):
        with pytest.raises(ValueError):
            check_prefix(bad)


def test_overlapping_routes_name_one_owner_per_subject() -> None:
    owners = Owners(["p.GET.a.*", "p.GET.a.b", "p.POST.a.b"])
    assert owners.check
    assert owners.owner("p.GET.a.b") == "p.GET.a.b"
    assert owners.owner("p.GET.a.c") == "p.GET.a.*"
    assert owners.owner("p.POST.a.b") == "p.POST.a.b"
    assert not Owners(["p.GET.a.*", "p.GET.b.*", "p.POST.a.b"]).check


# -- properties -------------------------------------------------------------------------------

prefixes = st.lists(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=".*>"),
            min_size=1, max_size=8),
    min_size=1, max_size=3,
).map(".".join)  # fmt: skip
verbs = st.sampled_from([None, *VERBS])
any_uri = st.text()  # any text at all: dots, spaces, '*', '>', unicode, lone surrogates, ''
weird_segments = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", ".", "*", ">", "%", "%25", "%%", " ", "é", "É", "日本", "\u212a", "a.b"]),
)
uris = st.one_of(any_uri, st.lists(weird_segments, max_size=6).map("/".join))


@given(prefixes, uris, verbs)
@example("distro", "", None)
@example("distro", "/", "GET")
@example("distro", "//", "GET")
@example("distro", "%%", "GET")
@example("distro", "/\udc80", "GET")
def test_any_uri_maps_to_a_valid_ascii_subject_that_reverses(
    prefix: str, uri: str, verb: str | None
) -> None:
    subject = message_subject(prefix, uri, verb)
    assert subject.isascii()
    assert is_valid_subject(subject)
    assert nats_accepts(subject, subscription=False)
    assert nats_accepts(subject, subscription=True)  # a literal subject is a subscription too
    assert uri_of(subject, prefix) == (verb or "GET", uri.lower())


@given(uris, uris)
def test_two_uris_share_a_subject_only_when_routing_cannot_tell_them_apart(a: str, b: str) -> None:
    same = message_subject("p", a, "GET") == message_subject("p", b, "GET")
    assert same == (a.lower() == b.lower())


@given(st.text())
def test_escaping_is_reversible_and_never_leaves_a_reserved_character(text: str) -> None:
    token = escape(text) if text else "%"
    assert not any(c in token for c in ".*> \t\r\n")
    assert token.isascii() and token.isprintable()
    if text:
        assert unescape(token) == text


literal = st.text(st.characters(blacklist_characters="/{}", codec="utf-8"), min_size=0, max_size=5)
pattern_parts = st.lists(
    st.one_of(literal.map(lambda t: ("lit", t)), st.just(("param", ""))), min_size=1, max_size=5
)


@given(pattern_parts, st.lists(weird_segments, min_size=5, max_size=5), st.booleans(), st.data())
def test_a_route_subscription_matches_what_the_core_routes_to_the_route(
    parts: list[tuple[str, str]],
    fills: list[str],
    absolute: bool,
    data: st.DataObject,
) -> None:
    names = iter(f"p{i}" for i in range(10))
    pattern_segments = [t if kind == "lit" else "{" + next(names) + "}" for kind, t in parts]
    if absolute:
        pattern_segments = ["", *pattern_segments]
    pattern = "/".join(pattern_segments)
    assume(pattern)  # the core refuses an empty pattern
    [route] = routes(("POST", pattern))
    subscription = route_subject("p", route)
    assert is_valid_subject(subscription, wildcards=True)
    assert nats_accepts(subscription, subscription=True)
    # A uri made from the pattern (case changed, parameters filled) or any uri at all.
    made = "/".join(
        (s.swapcase() if data.draw(st.booleans()) else s)
        if not s.startswith("{")
        else fills[i % len(fills)]
        for i, s in enumerate(pattern_segments)
    )
    uri = data.draw(st.one_of(st.just(made), uris))
    router: Router[str] = Router()
    router.add("POST", pattern, "handler")
    routed = router.match("POST", uri)[0] is not None
    delivered = matches(subscription, message_subject("p", uri, "POST"))
    if routed:
        assert delivered, "NATS would not deliver a message the core routes to this route"
    if delivered and not routed:
        # NATS's '*' also takes the tokens '%' (an empty segment) and '%%' (no leading '/'),
        # which no {param} takes: the core then drops the message (no_route). Nothing else.
        tokens = message_subject("p", uri, "POST").split(".")[2:]
        stars = [i for i, t in enumerate(subscription.split(".")[2:]) if t == "*"]
        assert any(tokens[i] in ("%", "%%") for i in stars)
