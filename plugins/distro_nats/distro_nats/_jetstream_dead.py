"""Reading and re-driving a group's dead letters (the ``jetstream`` transport).

A group that gives up on a message (``max_deliveries`` deliveries, the last one failed)
publishes it on ``<prefix>._dead.<group token>``, which the dead-letter stream
(``DISTRODEAD_<prefix escaped>``) keeps: the data is the message's frame as it was sent; the
headers say ``Distro-Error`` (the last failure's text, a JSON string), ``Distro-Group`` (JSON),
``Distro-Deliveries``, ``Distro-Subject`` (the subject it was published on, JSON) and
``Distro-Stream-Seq`` (its sequence in the stream). Any NATS tool can read them
(``nats stream view DISTRODEAD_...``).

:func:`dead_letters` reads them as :class:`distro_core.transport.DeadLetter` values;
:func:`redrive` publishes them again, for that group only (on ``<prefix>._to.<group
token>...``, which other consumers skip: they had their copy), and deletes them from the
dead-letter stream. Both take the options a server or client of the prefix is made with
(``url`` or ``address``, ``prefix``, ``stream``, ``connect_timeout``...).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api

from distro_core import transport as kit

from ._jetstream_config import (
    JetStreamConfig,
    dead_stream_name,
    dead_subject,
    read_jetstream_options,
    redrive_head,
    routes_stream_name,
)
from ._jetstream_setup import js_error
from ._link import Link, connect

__all__ = ["dead_letters", "delete_streams", "redrive"]


async def dead_letters(group: str, *, count: int = 1000, **options: Any) -> list[kit.DeadLetter]:
    """The dead letters of ``group``, oldest first.

    :param count: at most this many.
    :param options: the prefix's options (``url``, ``prefix``...), as for a client.
    :raises distro.ConnectionError: NATS cannot be reached.
    :raises TypeError, ValueError: bad options.
    """
    config = _config(group, options)
    async with _link(config) as link:
        return [letter for _, letter, _ in await _read(link, config, group, count)]


async def redrive(group: str, *, count: int = 1000, **options: Any) -> int:
    """Publish ``group``'s dead letters again (oldest first), for that group only, each
    deleted from the dead-letter stream once JetStream stored it again. Replies to requests
    among them go nowhere (the requests have ended).

    :param count: at most this many.
    :returns: how many were sent again.
    :raises distro.ConnectionError: NATS cannot be reached.
    :raises distro.TransportError: JetStream refused one (those before it were sent).
    """
    config = _config(group, options)
    head = redrive_head(config.prefix, group)
    dead = dead_stream_name(config.stream)
    sent = 0
    async with _link(config) as link:
        js = link.jetstream(timeout=config.nats.connect_timeout)
        for seq, letter, subject in await _read(link, config, group, count):
            rest = subject[len(config.prefix) + 1 :] if subject.startswith(config.prefix) else ""
            if not rest:
                continue
            try:
                await js.publish(f"{head}.{rest}", letter.data)
                await js.delete_msg(dead, seq)
            except (nats.errors.Error, OSError) as exc:
                raise js_error(exc, f"jetstream transport: re-driving dead letter {seq}") from exc
            sent += 1
    return sent


async def delete_streams(**options: Any) -> int:
    """Delete the streams of a prefix (messages, dead letters, routes), and with them every
    group's consumer: what a test or a retired service does.

    :param options: the prefix's options (``url``, ``prefix``, ``stream``...).
    :returns: how many streams there were.
    :raises distro.ConnectionError: NATS cannot be reached.
    """
    config = _config(None, options)
    deleted = 0
    async with _link(config) as link:
        js = link.jetstream(timeout=config.nats.connect_timeout)
        stream = config.stream
        for name in (stream, dead_stream_name(stream), routes_stream_name(stream)):
            try:
                await js.delete_stream(name)
            except nats.js.errors.NotFoundError:
                continue
            except (nats.errors.Error, OSError) as exc:
                raise js_error(exc, f"jetstream transport: deleting stream {name}") from exc
            deleted += 1
    return deleted


def _config(group: str | None, options: Mapping[str, Any]) -> JetStreamConfig:
    if group is not None and (not isinstance(group, str) or not group):
        raise ValueError(f"group must be a non-empty string, got {group!r}")
    opts = kit.Options("jetstream", options)
    config = read_jetstream_options(opts)
    opts.finish()
    return config


@asynccontextmanager
async def _link(config: JetStreamConfig) -> AsyncIterator[Link]:
    link = await connect(config.nats, role="dead letters", reconnects=False)
    try:
        yield link
    finally:
        try:
            await link.close()
        except (nats.errors.Error, OSError):
            pass


async def _read(
    link: Link, config: JetStreamConfig, group: str, count: int
) -> list[tuple[int, kit.DeadLetter, str]]:
    """``(sequence, letter, original subject)`` of up to ``count`` dead letters of ``group``."""
    js = link.jetstream(timeout=config.nats.connect_timeout)
    stream = dead_stream_name(config.stream)
    subject = dead_subject(config.prefix, group)
    out: list[tuple[int, kit.DeadLetter, str]] = []
    seq = 1
    while len(out) < count:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            break  # no more (or no dead-letter stream at all)
        except (nats.errors.Error, OSError) as exc:
            raise js_error(exc, f"jetstream transport: reading dead letters of {stream}") from exc
        out.append(_letter(msg, group))
        seq = (msg.seq or seq) + 1
    return out


def _letter(msg: api.RawStreamMsg, group: str) -> tuple[int, kit.DeadLetter, str]:
    headers = msg.headers or {}

    def text(name: str) -> str:
        value = headers.get(name)
        try:
            decoded = json.loads(value) if value else ""
        except ValueError:
            decoded = value
        return decoded if isinstance(decoded, str) else str(decoded)

    deliveries = headers.get("Distro-Deliveries", "0")
    letter = kit.DeadLetter(
        data=msg.data or b"",
        group=text("Distro-Group") or group,
        error=text("Distro-Error"),
        deliveries=int(deliveries) if str(deliveries).isdigit() else 0,
    )
    return int(msg.seq or 0), letter, text("Distro-Subject")
