"""Routing: which handlers a message reaches.

Most tests go through a Server over the in-process transport and ask with requests, so a missing
route shows as a RemoteError instead of a wait. The Router is pure and also tested directly: against
a brute-force model of "most specific wins", and structurally for its cost (no timing).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distro_core as distro
from distro_core import _routing
from distro_core._routing import Router
from distro_core.testing import Recorder


@contextlib.asynccontextmanager
async def serving(setup: Callable[[distro.Server], None]) -> AsyncIterator[distro.Client]:
    """A server set up by ``setup`` and a client for it, on a private in-process network."""
    factory = distro.create("memory")
    network = distro.MemoryNetwork()
    server = factory.server(port=0, network=network)
    setup(server)
    async with server, factory.client(port=server.address[1], network=network) as client:
        yield client


async def ask(client: distro.Client, uri: str, verb: str | None = "GET") -> Any:
    """Send a request; return the reply's payload (RemoteError when nothing handles it)."""
    headers = {"uri": uri} if verb is None else {"uri": uri, "verb": verb}
    reply = await client.request(distro.message(headers), timeout=5.0)
    return reply.payload


def answer(name: str) -> Callable[[distro.Message], Any]:
    """A handler that answers with its name and the path parameters it was given."""

    def handler(msg: distro.Message) -> Any:
        return {"route": name, "params": msg.params}

    return handler


# -- through a server -------------------------------------------------------------------------


async def test_a_static_route_matches_only_its_uri() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/customers", answer("list"))

    async with serving(setup) as client:
        assert await ask(client, "/customers") == {"route": "list", "params": {}}
        for other in ("/customers/", "/customer", "customers", "/customers/7", "/"):
            with pytest.raises(distro.RemoteError, match="no handler for GET"):
                await ask(client, other)


async def test_a_parameter_matches_one_segment_and_keeps_its_case() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/customer/{id}", answer("one"))
        server.get("/customer/{id}/orders/{order}", answer("order"))

    async with serving(setup) as client:
        assert await ask(client, "/customer/AbC") == {"route": "one", "params": {"id": "AbC"}}
        assert await ask(client, "/customer/a.b%20c") == {
            "route": "one",
            "params": {"id": "a.b%20c"},  # no decoding: the segment as sent
        }
        assert await ask(client, "/customer/7/orders/X9") == {
            "route": "order",
            "params": {"id": "7", "order": "X9"},
        }
        for other in ("/customer/", "/customer//orders/1", "/customer/7/8", "/customer/7/"):
            with pytest.raises(distro.RemoteError):
                await ask(client, other)


async def test_matching_ignores_case_but_params_keep_theirs() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/Health", answer("health"))
        server.get("/Customer/{Id}/Orders", answer("orders"))

    async with serving(setup) as client:
        for uri in ("/health", "/HEALTH", "/hEaLtH"):
            assert (await ask(client, uri))["route"] == "health"
        assert await ask(client, "/CUSTOMER/MiXeD/orders") == {
            "route": "orders",
            "params": {"Id": "MiXeD"},
        }


async def test_a_literal_segment_beats_a_parameter() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/customer/{id}", answer("param"))
        server.get("/customer/me", answer("me"))
        server.get("/customer/{id}/x", answer("param-x"))
        server.get("/customer/me/{what}", answer("me-what"))

    async with serving(setup) as client:
        assert (await ask(client, "/customer/me"))["route"] == "me"
        assert (await ask(client, "/customer/ME"))["route"] == "me"
        assert await ask(client, "/customer/you") == {"route": "param", "params": {"id": "you"}}
        # At the second segment "me" is literal in one route and a parameter in the other.
        assert await ask(client, "/customer/me/x") == {
            "route": "me-what",
            "params": {"what": "x"},
        }


async def test_the_earliest_literal_decides_and_dead_ends_backtrack() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/a/{x}/c", answer("literal-first"))
        server.get("/{y}/b/c", answer("param-first"))
        server.get("/a/b/x/{p}", answer("deep-literal"))
        server.get("/a/{q}/y/z", answer("backtracked"))

    async with serving(setup) as client:
        assert await ask(client, "/a/b/c") == {"route": "literal-first", "params": {"x": "b"}}
        assert await ask(client, "/z/b/c") == {"route": "param-first", "params": {"y": "z"}}
        assert await ask(client, "/a/b/x/1") == {"route": "deep-literal", "params": {"p": "1"}}
        # "/a/b" leads down the literal branch, which has no "y": back up, take {q}.
        assert await ask(client, "/a/b/y/z") == {"route": "backtracked", "params": {"q": "b"}}


async def test_a_message_without_a_verb_is_routed_as_get() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/thing/{id}", answer("get"))
        server.post("/thing/{id}", answer("post"))
        server.get("/static", answer("get-static"))

    async with serving(setup) as client:
        assert await ask(client, "/thing/1", verb=None) == {"route": "get", "params": {"id": "1"}}
        assert (await ask(client, "/static", verb=None))["route"] == "get-static"
        assert (await ask(client, "/thing/1", verb="post"))["route"] == "post"


async def test_head_is_not_get() -> None:
    def setup(server: distro.Server) -> None:
        server.get("/only-get", answer("get"))
        server.get("/both", answer("get"))
        server.head("/both", answer("head"))

    async with serving(setup) as client:
        with pytest.raises(distro.RemoteError, match="no handler for HEAD /only-get"):
            await ask(client, "/only-get", verb="HEAD")
        assert (await ask(client, "/both", verb="HEAD"))["route"] == "head"
        assert (await ask(client, "/both", verb="GET"))["route"] == "get"


async def test_each_verb_has_its_own_routes() -> None:
    verbs = sorted(distro.VERBS)

    def setup(server: distro.Server) -> None:
        for verb in verbs:
            server.route(verb.lower(), "/item/{id}", answer(verb))

    async with serving(setup) as client:
        for verb in verbs:
            assert await ask(client, "/item/9", verb=verb) == {"route": verb, "params": {"id": "9"}}


async def test_every_handler_of_a_route_runs_in_registration_order() -> None:
    calls: list[str] = []

    def handler(name: str, result: Any) -> Callable[[distro.Message], Any]:
        def run(msg: distro.Message) -> Any:
            calls.append(f"{name}:{msg.params['id']}")
            return result

        return run

    def setup(server: distro.Server) -> None:
        server.post("/order/{id}", handler("first", None))
        server.post("/order/{id}", handler("second", "second's answer"))
        server.post("/ORDER/{id}", handler("third", "third's answer"))  # the same route

    async with serving(setup) as client:
        reply = await ask(client, "/order/5", verb="POST")
        # The first non-None return value is the reply; every handler still ran, in order.
        assert reply == "second's answer"
        assert calls == ["first:5", "second:5", "third:5"]


async def test_params_are_not_part_of_the_message_on_the_wire() -> None:
    recorder = Recorder()

    def setup(server: distro.Server) -> None:
        server.put("/doc/{name}", recorder)

    async with serving(setup) as client:
        sent = distro.message({"uri": "/doc/Readme", "verb": "PUT"}, {"n": 1})
        await client.send(sent)
        [got] = await recorder.wait_for(1)
    assert got.params == {"name": "Readme"}
    assert got == sent
    assert got.to_bytes() == sent.to_bytes()
    assert distro.parse(got.to_bytes()).params == {}


async def test_a_catch_all_handler_sees_every_message() -> None:
    everything: list[str] = []

    def setup(server: distro.Server) -> None:
        server.receive(lambda msg: everything.append(msg.uri))
        server.get("/routed", answer("routed"))

    async with serving(setup) as client:
        assert (await ask(client, "/routed"))["route"] == "routed"
        with pytest.raises(distro.RemoteError):
            await ask(client, "/unrouted")
    assert everything == ["/routed", "/unrouted"]


def test_the_server_lists_its_routes_in_registration_order() -> None:
    server = distro.create("memory").server(port=0, network=distro.MemoryNetwork())
    server.get("/a", answer("a"))
    server.post("/b/{x}", answer("b"))
    server.get("/A", answer("a-again"))  # the same route as "/a"
    server.route("delete", "/c", answer("c"))
    assert [(r.verb, r.pattern) for r in server.routes] == [
        ("GET", "/a"),
        ("POST", "/b/{x}"),
        ("DELETE", "/c"),
    ]


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "/a{x}",
        "/{x}b",
        "/{x",
        "/x}",
        "/{x}{y}",
        "/{{x}}",
        "/{}",
        "/{1x}",
        "/{x-y}",
        "/{ x}",
        "/{x}/{x}",
        "/a/{id}/b/{id}",
    ],
)
def test_a_malformed_pattern_is_a_route_error(pattern: str) -> None:
    server = distro.create("memory").server(port=0, network=distro.MemoryNetwork())
    with pytest.raises(distro.RouteError):
        server.get(pattern, answer("x"))
    with pytest.raises(ValueError):  # RouteError is a ValueError too
        server.post(pattern, answer("x"))
    assert server.routes == ()


@pytest.mark.parametrize("verb", ["CONNECT", "", "GET ", "po\u017ft", 1, None])
def test_an_unknown_verb_is_a_route_error(verb: Any) -> None:
    server = distro.create("memory").server(port=0, network=distro.MemoryNetwork())
    with pytest.raises(distro.RouteError):
        server.route(verb, "/a", answer("x"))


def test_the_same_shape_with_other_parameter_names_is_a_route_error() -> None:
    server = distro.create("memory").server(port=0, network=distro.MemoryNetwork())
    server.get("/a/{id}", answer("x"))
    with pytest.raises(distro.RouteError, match="clashes"):
        server.get("/A/{name}", answer("y"))
    server.post("/a/{name}", answer("z"))  # another verb: another tree
    server.get("/a/{id}/b", answer("w"))  # another shape


# -- the router, directly ---------------------------------------------------------------------


def test_match_returns_the_route_its_handlers_and_params() -> None:
    router: Router[str] = Router()
    route = router.add("get", "/u/{id}", "h1")
    assert router.add("GET", "/U/{id}", "h2") is route
    found, params = router.match("GET", "/u/Z")
    assert found is route
    assert found.handlers == ("h1", "h2")
    assert found.verb == "GET" and found.pattern == "/u/{id}" and found.param_names == ("id",)
    assert params == {"id": "Z"}
    assert router.match("POST", "/u/Z") == (None, {})
    assert router.match("TRACE", "/u/Z") == (None, {})
    assert router.match(None, "/u/Z")[0] is route


def test_params_from_a_remembered_match_are_a_fresh_dict_each_time() -> None:
    router: Router[str] = Router()
    router.add("GET", "/u/{id}", "h")
    _, first = router.match("GET", "/u/7")
    first["id"] = "changed"
    first["extra"] = "x"
    _, second = router.match("GET", "/u/7")
    assert second == {"id": "7"}


def test_a_route_added_later_takes_over_matches_already_made() -> None:
    router: Router[str] = Router()
    router.add("GET", "/{a}/{b}", "general")
    assert router.match("GET", "/x/y")[0].handlers == ("general",)  # type: ignore[union-attr]
    router.add("GET", "/x/{b}", "specific")
    route, params = router.match("GET", "/x/y")
    assert route is not None and route.handlers == ("specific",)
    assert params == {"b": "y"}
    router.add("GET", "/x/y", "static")
    route, params = router.match("GET", "/x/y")
    assert route is not None and route.handlers == ("static",) and params == {}


def test_remembered_matches_stay_bounded_and_correct() -> None:
    router: Router[int] = Router()
    router.add("GET", "/u/{id}", 1)
    for n in range(3 * Router.MEMO_SIZE):
        route, params = router.match("GET", f"/u/{n}")
        assert params == {"id": str(n)}
        assert len(router._memo["GET"]) <= Router.MEMO_SIZE  # a flood of uris holds no memory
    assert route is not None and route.handlers == (1,)
    assert router.match("GET", "/u/0")[1] == {"id": "0"}


def test_remembered_matches_are_bounded_in_bytes_not_only_in_count() -> None:
    # 2,000 distinct uris of 100 KB held 382 MiB when the memo was capped by count alone.
    import tracemalloc

    router: Router[int] = Router()
    router.add("GET", "/u/{id}", 1)
    router.add("GET", "/v/{id}", 2)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            uri = f"/u/{n}{'x' * 100_000}" if n % 2 else f"/v/{n:0300d}"
            route, params = router.match("GET", uri)
            assert route is not None and params["id"] == uri[3:]
            del route, params, uri
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < Router.MEMO_BYTES + 1024 * 1024, f"the memo holds {held / 2**20:.1f} MiB"
    assert sum(len(m) for m in router._memo.values()) > 0  # short uris are still remembered


def _counting_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    walk = _routing._walk

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return walk(*args)

    # _walk recurses through the module global, so every node visited is counted.
    monkeypatch.setattr(_routing, "_walk", counted)
    return calls


def test_matching_visits_a_few_nodes_whatever_the_number_of_routes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router: Router[int] = Router()
    for n in range(10_000):
        router.add("GET", f"/svc{n}/{{id}}/op", n)
        router.add("GET", f"/{{tenant}}/item{n}/{{id}}", n)
    calls = _counting_walks(monkeypatch)
    cases = [
        ("/svc9999/42/op", 9999, {"id": "42"}),
        ("/svc0/x/op", 0, {"id": "x"}),
        ("/acme/item5000/7", 5000, {"tenant": "acme", "id": "7"}),
        ("/svc17/item17/7", 17, {"tenant": "svc17", "id": "7"}),  # backtracks once
    ]
    for uri, handler, params in cases:
        calls[0] = 0
        route, found = router.match("GET", uri)
        assert route is not None and route.handlers == (handler,) and found == params
        # One visit per segment plus the root, doubled at most for one backtrack.
        assert calls[0] <= 2 * (uri.count("/") + 2), (uri, calls[0])
    for uri in ("/svc10000/1/op", "/nope/nope/nope/nope", "/a/item1/b/c"):
        calls[0] = 0
        assert router.match("GET", uri) == (None, {})
        assert calls[0] <= 2 * (uri.count("/") + 2), (uri, calls[0])


_SEGMENTS = ["a", "b", "A", "", "{p}"]
_URI_SEGMENTS = ["a", "b", "B", "c", ""]


def _pattern(segments: list[str]) -> str:
    return "/".join(f"{{p{i}}}" if s == "{p}" else s for i, s in enumerate(segments))


def _most_specific(patterns: list[str], uri: str) -> tuple[str, dict[str, str]] | None:
    """The model: of the patterns matching ``uri``, the one with literals earliest."""
    parts = uri.split("/")
    best: tuple[list[int], str, dict[str, str]] | None = None
    for pattern in patterns:
        segments = pattern.split("/")
        if len(segments) != len(parts):
            continue
        rank: list[int] = []
        params: dict[str, str] = {}
        for segment, part in zip(segments, parts, strict=True):
            if segment.startswith("{"):
                if not part:
                    break
                rank.append(0)
                params[segment[1:-1]] = part
            elif segment.lower() == part.lower():
                rank.append(1)
            else:
                break
        else:
            if best is None or rank > best[0]:
                best = (rank, pattern, params)
    return None if best is None else (best[1].lower(), best[2])


@settings(max_examples=300)
@given(
    st.lists(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=4), max_size=12),
    st.lists(st.lists(st.sampled_from(_URI_SEGMENTS), min_size=1, max_size=4), max_size=12),
)
def test_the_router_agrees_with_a_brute_force_model(
    pattern_parts: list[list[str]], uri_parts: list[list[str]]
) -> None:
    patterns = [_pattern(p) for p in pattern_parts]
    patterns = [p for p in patterns if p]
    router: Router[str] = Router()
    for pattern in patterns:
        router.add("GET", pattern, pattern)
    for uri in ["/".join(u) for u in uri_parts] + patterns:
        expected = _most_specific(patterns, uri)
        for _ in range(2):  # the second time from the memo
            route, params = router.match("GET", uri)
            if expected is None:
                assert route is None and params == {}, uri
            else:
                assert route is not None, uri
                assert (route.pattern.lower(), params) == expected, uri
