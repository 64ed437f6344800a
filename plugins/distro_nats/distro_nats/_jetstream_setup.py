"""Making the streams and consumers of the ``jetstream`` transport (through nats-py's
JetStream API: these are a few requests at start and after a reconnection, not the hot path).

* :func:`ensure_streams`: the stream of the prefix and its dead-letter stream, made when
  missing (with the ``max_msgs``/``max_bytes``/``max_age`` limits, file storage by default);
  a stream that exists is used as it is (its limits are not changed: a warning says so when
  they differ from the options).
* :func:`ensure_consumer`: a group's durable pull consumer (shared by its members), or the
  ephemeral consumer of a server without a group.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

import distro_core as distro
from distro_core import transport as kit

from ._jetstream_config import (
    JetStreamConfig,
    consumer_for,
    dead_stream_name,
    routes_stream_name,
    stream_subjects,
)
from ._link import NATS_ERRORS, log

__all__ = ["INACTIVE_THRESHOLD", "JS_ERRORS", "ensure_consumer", "ensure_streams", "js_error"]

INACTIVE_THRESHOLD = 60.0
"""Seconds the ephemeral consumer of a server without a group outlives its server's last pull
request (a server that lost NATS for longer makes a new one from where it was)."""

JS_ERRORS: kit.ErrorTable = (
    *NATS_ERRORS,
    (nats.js.errors.ServiceUnavailableError, distro.ConnectionError),
    (nats.js.errors.Error, distro.TransportError),
    (nats.errors.NoRespondersError, distro.ConnectionError),
)
"""nats-py's JetStream exceptions and the distro errors they become."""


def js_error(exc: BaseException, context: str) -> distro.TransportError:
    """The distro error for a nats-py exception met while ``context``."""
    if isinstance(exc, nats.errors.NoRespondersError):
        return distro.ConnectionError(f"{context}: JetStream is not enabled on this NATS server")
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        return distro.TransportError(f"{context}: {exc.description} (code {exc.err_code})")
    return kit.map_error(exc, context, table=JS_ERRORS)


def _stream_config(config: JetStreamConfig, name: str, subjects: list[str]) -> api.StreamConfig:
    if name.startswith("DISTROROUTES_"):  # one message per route, kept
        return api.StreamConfig(
            name=name,
            subjects=subjects,
            retention=api.RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
            storage=api.StorageType.FILE if config.storage == "file" else api.StorageType.MEMORY,
            num_replicas=config.replicas,
        )
    return api.StreamConfig(
        name=name,
        subjects=subjects,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs=config.max_msgs,
        max_bytes=config.max_bytes,
        max_age=config.max_age,
        storage=api.StorageType.FILE if config.storage == "file" else api.StorageType.MEMORY,
        num_replicas=config.replicas,
        duplicate_window=min(config.duplicate_window, config.max_age or config.duplicate_window),
        discard=api.DiscardPolicy.OLD,
    )


async def ensure_streams(link: Client, config: JetStreamConfig, *, dead: bool = True) -> None:
    """Make the stream and the routes stream (and, with ``dead``, the dead-letter stream)
    when missing.

    :raises distro.ConnectionError: NATS (or JetStream) cannot be reached.
    :raises distro.TransportError: JetStream refused to make one (say, its subjects overlap
        another stream's).
    """
    prefix = config.prefix
    wanted = [
        (config.stream, stream_subjects(prefix)),
        (routes_stream_name(config.stream), [f"{prefix}._routes.>"]),
    ]
    if dead:
        wanted.append((dead_stream_name(config.stream), [f"{prefix}._dead.>"]))
    js = link.jetstream(timeout=config.nats.connect_timeout)
    for name, subjects in wanted:
        context = f"jetstream transport: making stream {name} on {config.nats.location}"
        try:
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await js.add_stream(_stream_config(config, name, subjects))
                log.info("jetstream transport: made stream %s (%s)", name, ", ".join(subjects))
                continue
        except (nats.errors.Error, OSError) as exc:
            if isinstance(exc, nats.js.errors.BadRequestError) and exc.err_code == 10058:
                continue  # made by another member just now ("stream name already in use")
            raise js_error(exc, context) from exc
        have = info.config
        if name != config.stream:
            continue
        if (have.max_msgs, have.max_bytes) != (config.max_msgs, config.max_bytes):
            log.warning(
                "jetstream transport: stream %s exists with max_msgs=%s max_bytes=%s; "
                "used as it is (the options say %s, %s)",
                name,
                have.max_msgs,
                have.max_bytes,
                config.max_msgs,
                config.max_bytes,
            )


async def ensure_consumer(
    link: Client, config: JetStreamConfig, *, start_seq: int | None = None
) -> str:
    """The name of the consumer this server pulls from, made when missing: the group's durable
    one, or (no group) a new ephemeral one delivering what is stored from now on (from
    ``start_seq`` when given: a server that lost its consumer goes on where it was).

    :raises distro.ConnectionError: NATS cannot be reached.
    :raises distro.TransportError: JetStream refused.
    """
    js = link.jetstream(timeout=config.nats.connect_timeout)
    group = config.group
    context = f"jetstream transport: making a consumer of stream {config.stream}"
    if group is not None:
        durable = consumer_for(group)
        wanted = api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=config.ack_wait,
            max_deliver=-1,
            max_ack_pending=config.max_ack_pending,
            replay_policy=api.ReplayPolicy.INSTANT,
        )
        try:
            await js.add_consumer(config.stream, wanted)
        except nats.js.errors.BadRequestError as exc:
            # Made by another member with other settings: share it as it is.
            log.warning("jetstream transport: consumer %s of %s: %s; using it as it is",
                        durable, config.stream, exc.description)  # fmt: skip
            try:
                await js.consumer_info(config.stream, durable)
            except (nats.errors.Error, OSError) as again:
                raise js_error(again, context) from again
        except (nats.errors.Error, OSError) as exc:
            raise js_error(exc, context) from exc
        return durable
    ephemeral = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.NEW
        if start_seq is None
        else api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
        ack_policy=api.AckPolicy.ALL,
        ack_wait=config.ack_wait,
        max_deliver=-1,
        max_ack_pending=config.max_ack_pending,
        inactive_threshold=INACTIVE_THRESHOLD,
        replay_policy=api.ReplayPolicy.INSTANT,
    )
    try:
        info = await js.add_consumer(config.stream, ephemeral)
    except (nats.errors.Error, OSError) as exc:
        raise js_error(exc, context) from exc
    return str(info.name)
