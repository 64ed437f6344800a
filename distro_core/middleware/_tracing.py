"""OpenTelemetry tracing as a middleware (the ``otel`` extra: ``opentelemetry-api``).

A client with :class:`Tracing` starts a span for each send (kind PRODUCER) and request (kind
CLIENT) and carries its context to the server in the W3C ``traceparent`` and ``tracestate``
headers; a server with it starts a span for each message it processes (kind CONSUMER, or
SERVER for a request) as a child of the sender's, current while the handlers run (so the calls
a handler makes are its children). Attributes follow OpenTelemetry's messaging semantic
conventions: ``messaging.system`` (``"distro"``), ``messaging.destination.name`` (the uri),
``messaging.operation.type`` and ``messaging.operation.name``, ``messaging.message.id``, and
``distro.transport`` when known. A failure sets the span's status to ERROR with
``error.type``; a message dropped before its handlers ran carries ``distro.dropped`` (the
reason).
"""

from __future__ import annotations

from typing import Any

from .._middleware import Incoming, Middleware, Outgoing

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "distro_core.middleware.Tracing needs OpenTelemetry: pip install 'distro-core[otel]'"
    ) from exc

__all__ = ["Tracing"]

SYSTEM = "distro"


class Tracing(Middleware):
    """Trace sends, requests and their handling with OpenTelemetry (see the module docstring).

    :param tracer_provider: where spans go; the global one (``trace.set_tracer_provider``) by
        default. Without an SDK configured, spans are no-ops and cost little.
    :param propagator: how the context travels in headers; W3C Trace Context by default.
    :param transport: the transport's name, recorded as ``distro.transport``.
    """

    uses_context = True

    def __init__(
        self,
        tracer_provider: Any = None,
        propagator: TextMapPropagator | None = None,
        transport: str | None = None,
    ) -> None:
        from .. import __version__

        self._tracer = trace.get_tracer("distro_core", __version__, tracer_provider)
        self._propagator = propagator or TraceContextTextMapPropagator()
        self._transport = transport

    def _attributes(self, operation: str, name: str, uri: str, msg_id: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": uri,
            "messaging.operation.type": operation,
            "messaging.operation.name": name,
            "messaging.message.id": msg_id,
        }
        if self._transport is not None:
            attributes["distro.transport"] = self._transport
        return attributes

    # -- client ---------------------------------------------------------------------------

    def sending(self, ctx: Outgoing) -> None:
        """Start the send or request span; put its context in the headers."""
        msg = ctx.message
        request = ctx.kind != "send"
        name = "request" if ctx.kind == "request" else "send"
        span = self._tracer.start_span(
            f"{name} {msg.uri}",
            kind=trace.SpanKind.CLIENT if request else trace.SpanKind.PRODUCER,
            attributes=self._attributes("send", name, msg.uri, msg.id),
        )
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            ctx.set_header(key, value)
        ctx.state[self] = span

    def finished(self, ctx: Outgoing) -> None:
        """End the span; a failure sets its status."""
        span = ctx.state.pop(self, None)
        if span is None:
            return
        if ctx.error is not None:
            _failed(span, ctx.error)
        span.end()

    # -- server ---------------------------------------------------------------------------

    def received(self, ctx: Incoming) -> None:
        """Start the processing span, a child of the sender's; make it current."""
        msg = ctx.message
        headers = msg.headers
        parent = self._propagator.extract(headers)
        request = "replyTo" in headers
        span = self._tracer.start_span(
            f"process {msg.uri}",
            context=parent,
            kind=trace.SpanKind.SERVER if request else trace.SpanKind.CONSUMER,
            attributes=self._attributes("process", "process", msg.uri, msg.id),
        )
        ctx.state[self] = span
        # The server runs this dispatch in a copy of the context (uses_context): no detach.
        otel_context.attach(trace.set_span_in_context(span, parent))

    def handled(self, ctx: Incoming) -> None:
        """End the processing span with what happened."""
        span = ctx.state.pop(self, None)
        if span is None:
            return
        if ctx.dropped is not None:
            span.set_attribute("distro.dropped", ctx.dropped)
        if ctx.failed:
            if ctx.exception is not None:
                _failed(span, ctx.exception)
            else:
                span.set_status(trace.Status(trace.StatusCode.ERROR, ctx.error or "failed"))
        span.end()


def _failed(span: Any, error: BaseException) -> None:
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
