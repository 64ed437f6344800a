"""The ``jetstream`` transport's options and names. Pure: no I/O.

Names (``<prefix>`` is the subject prefix, ``distro`` by default):

* the **stream** of a prefix, ``DISTRO_<prefix escaped>`` (the ``stream`` option overrides
  it), takes every message subject of the prefix, ``<prefix>.<VERB>.>`` for each verb, and
  the re-driven dead letters, ``<prefix>._to.>``; never the control subjects
  (``<prefix>._ack.<n>``, RECEIVED over core NATS);
* the **dead-letter stream**, ``DISTRODEAD_<prefix escaped>``, takes ``<prefix>._dead.>``: a
  group's dead letters are published on ``<prefix>._dead.<group token>``;
* the **routes stream**, ``DISTROROUTES_<prefix escaped>``, keeps one (empty) message per
  route any server of the prefix ever served, on ``<prefix>._routes.<VERB>.<tokens>`` (a
  ``{param}`` token written ``%%%``, a catch-all ``%%%%``): a client's request that no such
  route matches fails at once instead of waiting for its time-out;
* a group's **durable consumer** is named after the group (escaped); a server without a group
  reads through an ephemeral consumer of its own;
* a dead letter re-driven for one group goes on ``<prefix>._to.<group token>.<VERB>...``:
  that group takes it as the message it was, other consumers skip it.

Escaping for stream and consumer names: ASCII letters, digits and ``-`` stay, every other
byte is ``_XX`` (upper-case hex), so distinct prefixes or groups never share a name.
"""

from __future__ import annotations

import dataclasses
import re

from distro_core import VERBS
from distro_core.transport import Options

from ._config import NatsConfig, read_options
from .subjects import escape

__all__ = [
    "DEFAULT_ACK_WAIT",
    "DEFAULT_BATCH",
    "DEFAULT_MAX_ACK_PENDING",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DELIVERIES",
    "DEFAULT_MAX_MSGS",
    "DEFAULT_MAX_UNACKED",
    "DEFAULT_REDELIVERY_DELAY",
    "JetStreamConfig",
    "consumer_for",
    "dead_stream_name",
    "dead_subject",
    "name_token",
    "read_jetstream_options",
    "redrive_head",
    "route_marks",
    "routes_stream_name",
    "routes_subjects",
    "stream_name",
    "stream_subjects",
]

DEFAULT_MAX_MSGS = 1_000_000
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_ACK_WAIT = 30.0
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_REDELIVERY_DELAY = 1.0
DEFAULT_BATCH = 256
DEFAULT_MAX_ACK_PENDING = 20_000
DEFAULT_MAX_UNACKED = 256
DEFAULT_DUPLICATE_WINDOW = 120.0

_NAME_SAFE = re.compile(r"[^A-Za-z0-9-]")


def name_token(text: str) -> str:
    """``text`` as a stream or consumer name part: ``[A-Za-z0-9-]`` stay, the rest ``_XX``."""
    return _NAME_SAFE.sub(lambda m: "".join(f"_{b:02X}" for b in m.group().encode()), text)


def stream_name(prefix: str) -> str:
    """The default stream of a prefix."""
    return "DISTRO_" + name_token(prefix)


def dead_stream_name(stream: str) -> str:
    """The dead-letter stream that goes with ``stream``."""
    return "DISTRODEAD_" + stream.removeprefix("DISTRO_")


def routes_stream_name(stream: str) -> str:
    """The routes stream that goes with ``stream``."""
    return "DISTROROUTES_" + stream.removeprefix("DISTRO_")


PARAM_MARK = "%%%"
"""A ``{param}`` token (``*``) in a routes-stream subject (never made by escaping)."""
ALL_MARK = "%%%%"
"""A catch-all's ``>`` in a routes-stream subject."""


def route_marks(prefix: str, patterns: frozenset[str]) -> list[str]:
    """The routes-stream subjects of a server's subscription patterns (:func:`.subjects.plan`)."""
    head = f"{prefix}."
    out = []
    for pattern in sorted(patterns):
        tokens = pattern[len(head) :].split(".")
        marked = [PARAM_MARK if t == "*" else ALL_MARK if t == ">" else t for t in tokens]
        out.append(f"{prefix}._routes." + ".".join(marked))
    return out


def routes_subjects(prefix: str, marks: object) -> frozenset[str]:
    """The subscription patterns of routes-stream subjects (the inverse of
    :func:`route_marks`); others are ignored."""
    head = f"{prefix}._routes."
    out = set()
    for mark in marks if isinstance(marks, (list, tuple, set, frozenset, dict)) else ():
        if isinstance(mark, str) and mark.startswith(head):
            tokens = mark[len(head) :].split(".")
            plain = ["*" if t == PARAM_MARK else ">" if t == ALL_MARK else t for t in tokens]
            out.add(f"{prefix}." + ".".join(plain))
    return frozenset(out)


def stream_subjects(prefix: str) -> list[str]:
    """The subjects the stream of ``prefix`` takes (messages and re-driven dead letters)."""
    return [f"{prefix}.{verb}.>" for verb in sorted(VERBS)] + [f"{prefix}._to.>"]


def dead_subject(prefix: str, group: str) -> str:
    """The subject ``group``'s dead letters are published on."""
    return f"{prefix}._dead.{escape(group)}"


def redrive_head(prefix: str, group: str) -> str:
    """What a dead letter re-driven for ``group`` has instead of ``<prefix>`` in its subject."""
    return f"{prefix}._to.{escape(group)}"


def consumer_for(group: str) -> str:
    """The durable consumer a group's members share."""
    return name_token(group)


@dataclasses.dataclass(frozen=True)
class JetStreamConfig:
    """Validated options (see the README's JetStream section).

    :ivar nats: the connection options shared with ``nats`` (URLs, prefix, group, TLS...).
    :ivar stream: the stream's name.
    :ivar max_msgs: the stream's (and the dead-letter stream's) message limit.
    :ivar max_bytes: their byte limit.
    :ivar max_age: seconds a message is kept (0: no limit).
    :ivar storage: ``"file"`` (kept across NATS restarts) or ``"memory"``.
    :ivar replicas: the streams' replicas (a NATS cluster).
    :ivar duplicate_window: seconds JetStream remembers message ids (a send re-published after
        a reconnection is stored once).
    :ivar ack_wait: seconds a delivery may stay unacknowledged with a member that stopped
        (died) before JetStream delivers it again; live members keep theirs.
    :ivar max_deliveries: deliveries of one message before a failure makes it a dead letter.
    :ivar redelivery_delay: seconds before a failed (or shed) message is delivered again.
    :ivar batch: messages asked for at most per pull request.
    :ivar max_ack_pending: the group consumer's limit of deliveries not yet acknowledged.
    :ivar max_unacked: a client's sends whose publish acknowledgement has not come yet; a
        send past it waits.
    """

    nats: NatsConfig
    stream: str
    max_msgs: int
    max_bytes: int
    max_age: float
    storage: str
    replicas: int
    duplicate_window: float
    ack_wait: float
    max_deliveries: int
    redelivery_delay: float
    batch: int
    max_ack_pending: int
    max_unacked: int

    @property
    def prefix(self) -> str:
        """The subject prefix."""
        return self.nats.prefix

    @property
    def group(self) -> str | None:
        """The group a server is a member of, or None."""
        return self.nats.group


def read_jetstream_options(opts: Options) -> JetStreamConfig:
    """Read the options into a :class:`JetStreamConfig`; the caller then calls
    ``opts.finish()``.

    :raises ValueError: a bad value.
    :raises TypeError: see :func:`~._config.read_options`.
    """
    nats = read_options(opts)
    stream = opts.string("stream", stream_name(nats.prefix))
    if not stream or _NAME_SAFE.sub("", stream.replace("_", "")) != stream.replace("_", ""):
        raise ValueError(
            f"{opts.transport} option 'stream' must be letters, digits, '-' and '_', "
            f"got {stream!r:.80}"
        )
    return JetStreamConfig(
        nats=nats,
        stream=stream,
        max_msgs=opts.integer("max_msgs", DEFAULT_MAX_MSGS, minimum=1),
        max_bytes=opts.integer("max_bytes", DEFAULT_MAX_BYTES, minimum=1024),
        max_age=opts.number("max_age", DEFAULT_MAX_AGE, minimum=0),
        storage=opts.choice("storage", "file", ("file", "memory")),
        replicas=opts.integer("replicas", 1, minimum=1, maximum=5),
        duplicate_window=opts.number("duplicate_window", DEFAULT_DUPLICATE_WINDOW, minimum=1),
        ack_wait=opts.number("ack_wait", DEFAULT_ACK_WAIT, minimum=0.1),
        max_deliveries=opts.integer("max_deliveries", DEFAULT_MAX_DELIVERIES, minimum=1),
        redelivery_delay=opts.number("redelivery_delay", DEFAULT_REDELIVERY_DELAY, minimum=0),
        batch=opts.integer("batch", DEFAULT_BATCH, minimum=1, maximum=10_000),
        max_ack_pending=opts.integer("max_ack_pending", DEFAULT_MAX_ACK_PENDING, minimum=1),
        max_unacked=opts.integer("max_unacked", DEFAULT_MAX_UNACKED, minimum=1),
    )
