"""Prometheus metrics as a middleware (the ``prometheus`` extra: ``prometheus-client``).

On a server: messages received, handled (by route and outcome), dropped (by reason, as the
chain saw them: refusals, ``no_route``, ``overload``, ``closing``, ``expired``...; frames
refused before any middleware, such as invalid JSON, are in ``server.stats`` only), the
handler duration per route, and the handlers in flight. On a client: requests and sends (by
kind and outcome) and their latency. Every series carries the ``transport`` label. Serve them
with ``prometheus_client.start_http_server`` or ``distro run --metrics-port N``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from .._middleware import Incoming, Middleware, Outgoing

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "distro_core.middleware.Metrics needs prometheus-client: "
        "pip install 'distro-core[prometheus]'"
    ) from exc

__all__ = ["Metrics"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Family:
    """The metric objects of one registry (each may be registered once per registry)."""

    def __init__(self, registry: CollectorRegistry, ns: str) -> None:
        self.received = Counter(
            f"{ns}_messages_received", "Messages received by servers.", ["transport"],
            registry=registry,
        )  # fmt: skip
        self.handled = Counter(
            f"{ns}_messages_handled", "Messages whose handlers ran, by route and outcome.",
            ["transport", "route", "outcome"], registry=registry,
        )  # fmt: skip
        self.dropped = Counter(
            f"{ns}_messages_dropped", "Messages dropped before their handlers ran, by reason.",
            ["transport", "reason"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            f"{ns}_handler_duration_seconds", "Time from a message's arrival to its handlers' end.",
            ["transport", "route"], buckets=_LATENCY, registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            f"{ns}_handlers_in_flight", "Messages received and not yet finished.", ["transport"],
            registry=registry,
        )  # fmt: skip
        self.requests = Counter(
            f"{ns}_client_requests", "Client sends and requests, by kind and outcome.",
            ["transport", "kind", "outcome"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            f"{ns}_client_request_duration_seconds",
            "Client sends and requests: from the call to its end (the reply, for a request).",
            ["transport", "kind"], buckets=_LATENCY, registry=registry,
        )  # fmt: skip


_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Family]] = (
    weakref.WeakKeyDictionary()
)


def _family(registry: CollectorRegistry, namespace: str) -> _Family:
    by_namespace = _families.setdefault(registry, {})
    family = by_namespace.get(namespace)
    if family is None:
        family = by_namespace[namespace] = _Family(registry, namespace)
    return family


class Metrics(Middleware):
    """Count and time messages in Prometheus metrics (see the module docstring).

    :param registry: where the metrics live; prometheus-client's default registry by default.
        Every :class:`Metrics` of one registry shares its series.
    :param transport: the ``transport`` label's value.
    :param namespace: the metric names' prefix.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        transport: str = "",
        namespace: str = "distro",
    ) -> None:
        self.registry = registry or prometheus_client.REGISTRY
        self._m = _family(self.registry, namespace)
        self._transport = transport
        self._received = self._m.received.labels(transport)
        self._in_flight = self._m.in_flight.labels(transport)
        # Label look-ups take a lock and build a key: each child is looked up once.
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, key: tuple[str, ...]) -> Any:
        child = self._children.get(key)
        if child is None:
            kind, *labels = key
            child = getattr(self._m, kind).labels(self._transport, *labels)
            self._children[key] = child
        return child

    # -- server ---------------------------------------------------------------------------

    def received(self, ctx: Incoming) -> None:
        """Count it; note when it came."""
        self._received.inc()
        self._in_flight.inc()
        ctx.state[self] = time.perf_counter()

    def handled(self, ctx: Incoming) -> None:
        """Count how it ended; time its handlers."""
        started = ctx.state.pop(self, None)
        if started is None:
            return
        self._in_flight.dec()
        if ctx.dropped is not None:
            self._child(("dropped", ctx.dropped)).inc()
            return
        route = ctx.route or "(catch-all)"  # no route matched; catch-all handlers ran
        self._child(("handled", route, "failed" if ctx.failed else "handled")).inc()
        self._child(("duration", route)).observe(time.perf_counter() - started)

    # -- client ---------------------------------------------------------------------------

    def sending(self, ctx: Outgoing) -> None:
        """Note when the call started."""
        ctx.state[self] = time.perf_counter()

    def finished(self, ctx: Outgoing) -> None:
        """Count and time the call."""
        started = ctx.state.pop(self, None)
        if started is None:
            return
        outcome = "ok" if ctx.error is None else _outcome(ctx.error)
        self._child(("requests", ctx.kind, outcome)).inc()
        self._child(("latency", ctx.kind)).observe(time.perf_counter() - started)


def _outcome(error: BaseException) -> str:
    code: Any = getattr(error, "code", None)
    if isinstance(code, str) and code:
        return code  # a RemoteError's code: handler_error, no_handler...
    return type(error).__name__  # RequestTimeout, ConnectionError...
