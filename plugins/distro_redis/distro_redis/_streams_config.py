"""The redis-streams transport's options, key names and pre-encoded commands. Pure: no I/O.

Keys (all under the optional ``prefix``, which names one stream: a service namespace):

* ``<prefix>distro.stream``: the stream every message of the namespace is appended to
  (``XADD ... MAXLEN ~ <maxlen> * ch <channel> msg <frame>``). ``ch`` is the message's
  channel as the ``redis`` transport names it (``/CUSTOMER/7.POST``): servers match it against
  their routes without parsing the frame. A re-driven dead letter carries a third field,
  ``to``, the one group it is for.
* ``<prefix>distro.dead.<group>``: the dead letters of one group (``msg``, ``ch``, ``error``,
  ``deliveries``, ``group``, ``id``), trimmed like the stream.
* ``<prefix>distro.routes``: a hash whose fields are the route subscriptions of every server
  that ever served the namespace (``/CUSTOMER/*.POST``); a client's request that none matches
  fails at once instead of waiting for its time-out.
* ``<prefix>distro.answered.<group>.<request id>``: a request a group has answered, kept for
  ``reply_window`` seconds, so a request delivered twice is answered once.

Consumer names: the ``consumer`` option, or ``<host name>:<n>`` where ``n`` is the number the
server claimed on the bus (its address port, unique among the running servers of the bus):
stable across restarts of the same member when it is given (``port=``), a new one each start
otherwise.
"""

from __future__ import annotations

import dataclasses
import socket

from distro_core.transport import Options

from ._config import RedisConfig, read_options
from ._resp import pack_command

__all__ = [
    "RETRY_CONSUMER",
    "StreamsConfig",
    "answered_key",
    "consumer_name",
    "dead_key",
    "read_streams_options",
    "routes_key",
    "stream_key",
    "xadd_head",
]

RETRY_CONSUMER = "distro.retry"
"""The consumer name a failed or returned entry is parked under until it is due again: any
member takes it from there (so a message is redelivered to any member, not only the one that
failed it)."""

DEFAULT_MAXLEN = 100_000
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_REDELIVERY_DELAY = 1.0
DEFAULT_CLAIM_AFTER = 30.0
DEFAULT_BATCH = 256
DEFAULT_REPLY_WINDOW = 300.0


@dataclasses.dataclass(frozen=True)
class StreamsConfig:
    """Validated options (see the README's redis-streams section).

    :ivar redis: where Redis is and the namespace (the ``redis`` transport's options).
    :ivar group: the consumer group a server is a member of, or None (its own copy of every
        message, read with XREAD).
    :ivar consumer: this member's consumer name in its group, or None for the default
        (:func:`consumer_name`).
    :ivar maxlen: the approximate length the stream (and a dead-letter stream) is trimmed to.
    :ivar max_deliveries: deliveries of one message before it becomes a dead letter.
    :ivar redelivery_delay: seconds before a failed (or returned) message is offered again.
    :ivar claim_after: seconds a message may stay unacknowledged with a member that stopped
        refreshing it (it died) before another member claims it.
    :ivar batch: entries read at most per XREADGROUP.
    :ivar reply_window: seconds a group remembers a request it answered.
    """

    redis: RedisConfig
    group: str | None
    consumer: str | None
    maxlen: int
    max_deliveries: int
    redelivery_delay: float
    claim_after: float
    batch: int
    reply_window: float

    @property
    def stream(self) -> bytes:
        """The stream's key."""
        return stream_key(self.redis.prefix)


def read_streams_options(opts: Options) -> StreamsConfig:
    """Read the options into a :class:`StreamsConfig`; the caller then calls ``opts.finish()``.

    :raises TypeError: an unknown URL parameter.
    :raises ValueError: a bad value.
    """
    redis = read_options(opts)
    group = opts.optional_string("group")
    if group is not None and not group:
        raise ValueError(f"{opts.transport} option 'group' must be a non-empty string")
    consumer = opts.optional_string("consumer")
    if consumer is not None and (not consumer or consumer == RETRY_CONSUMER):
        raise ValueError(
            f"{opts.transport} option 'consumer' must be a non-empty string other than "
            f"{RETRY_CONSUMER!r}, got {consumer!r}"
        )
    claim_after = opts.number("claim_after", DEFAULT_CLAIM_AFTER, minimum=0.05)
    return StreamsConfig(
        redis=redis,
        group=group,
        consumer=consumer,
        maxlen=opts.integer("maxlen", DEFAULT_MAXLEN, minimum=1),
        max_deliveries=opts.integer("max_deliveries", DEFAULT_MAX_DELIVERIES, minimum=1),
        redelivery_delay=opts.number("redelivery_delay", DEFAULT_REDELIVERY_DELAY, minimum=0.01),
        claim_after=claim_after,
        batch=opts.integer("batch", DEFAULT_BATCH, minimum=1, maximum=10_000),
        reply_window=opts.number("reply_window", DEFAULT_REPLY_WINDOW, minimum=1.0),
    )


def consumer_name(config: StreamsConfig, port: int) -> str:
    """A member's consumer name: the ``consumer`` option, else ``<host name>:<port>`` for the
    address port it claimed."""
    return config.consumer or f"{socket.gethostname() or 'localhost'}:{port}"


def stream_key(prefix: str) -> bytes:
    """The stream a namespace's messages are appended to."""
    return f"{prefix}distro.stream".encode()


def dead_key(prefix: str, group: str) -> bytes:
    """The dead-letter stream of ``group``."""
    return f"{prefix}distro.dead.{group}".encode()


def routes_key(prefix: str) -> bytes:
    """The hash of every route subscription servers of the namespace registered."""
    return f"{prefix}distro.routes".encode()


def answered_key(prefix: str, group: str) -> bytes:
    """The start of the keys marking requests ``group`` answered (the request id follows)."""
    return f"{prefix}distro.answered.{group}.".encode()


def xadd_head(stream: bytes, maxlen: int, channel: bytes) -> bytes:
    """The start of ``XADD stream MAXLEN ~ maxlen * ch channel msg <frame>``, up to (not
    including) the frame's length line: a sender keeps one per channel."""
    # Nine arguments: XADD key MAXLEN ~ n * ch <channel> msg, then the frame.
    head = pack_command(b"XADD", stream, b"MAXLEN", b"~", b"%d" % maxlen, b"*", b"ch", channel)
    return b"*10" + head[2:] + b"$3\r\nmsg\r\n"
