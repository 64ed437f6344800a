"""Reading and re-driving a group's dead letters (the ``<prefix>distro.dead.<group>`` stream).

A dead letter is an entry a group gave up on after ``max_deliveries`` failed deliveries: its
fields are ``msg`` (the message's frame, as sent), ``ch`` (its channel), ``error`` (the last
failure's text), ``deliveries``, ``group`` and ``id`` (the entry's id in the stream).
:func:`dead_letters` reads them as :class:`distro_core.transport.DeadLetter` values;
:func:`redrive` appends them to the stream again, addressed to that group only (a ``to``
field: other groups and servers without a group skip them, they had their copy), and deletes
them from the dead-letter stream. Both take the options a server or client of the namespace
is made with (``url`` or ``address``, ``prefix``, ``connect_timeout``, ``maxlen``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import distro_core as distro
from distro_core import transport as kit

from ._link import connect
from ._resp import Reply, pack_command
from ._streams_config import StreamsConfig, dead_key, read_streams_options
from ._streams_link import Commander

__all__ = ["dead_letters", "redrive"]


async def dead_letters(group: str, *, count: int = 1000, **options: Any) -> list[kit.DeadLetter]:
    """The dead letters of ``group``, oldest first.

    :param count: at most this many.
    :param options: the namespace's options (``url``, ``prefix``...), as for a client.
    :raises distro.ConnectionError: Redis cannot be reached.
    :raises TypeError, ValueError: bad options.
    """
    config = _config(group, options)
    link = await _link(config)
    try:
        reply = await link.call(
            pack_command(b"XRANGE", dead_key(config.redis.prefix, group), b"-", b"+", b"COUNT",
                         b"%d" % count),
            config.redis.connect_timeout,
        )  # fmt: skip
    finally:
        await link.aclose()
    return [letter for _, letter, _ in _letters(reply)]


async def redrive(group: str, *, count: int = 1000, **options: Any) -> int:
    """Send ``group``'s dead letters again (oldest first): each is appended to the stream for
    that group only, then deleted from the dead-letter stream. Replies to requests among them
    go nowhere (the requests have ended).

    :param count: at most this many.
    :returns: how many were sent again.
    :raises distro.ConnectionError: Redis cannot be reached.
    :raises distro.TransportError: Redis refused to append one (those before it were sent).
    """
    config = _config(group, options)
    dead = dead_key(config.redis.prefix, group)
    timeout = config.redis.connect_timeout
    link = await _link(config)
    sent = 0
    try:
        reply = await link.call(
            pack_command(b"XRANGE", dead, b"-", b"+", b"COUNT", b"%d" % count), timeout
        )
        for dead_id, letter, channel in _letters(reply):
            added = await link.call(
                pack_command(
                    b"XADD", config.stream, b"MAXLEN", b"~", b"%d" % config.maxlen, b"*",
                    b"ch", channel, b"msg", letter.data, b"to", group.encode(),
                ),
                timeout,
            )  # fmt: skip
            if not isinstance(added, bytes):
                raise distro.TransportError(
                    f"redis-streams transport: Redis refused to re-drive dead letter "
                    f"{dead_id!r}: {added!r}"
                )
            await link.call(pack_command(b"XDEL", dead, dead_id), timeout)
            sent += 1
    finally:
        await link.aclose()
    return sent


def _config(group: str, options: Mapping[str, Any]) -> StreamsConfig:
    if not isinstance(group, str) or not group:
        raise ValueError(f"group must be a non-empty string, got {group!r}")
    opts = kit.Options("redis-streams", options)
    config = read_streams_options(opts)
    opts.finish()
    return config


async def _link(config: StreamsConfig) -> Commander:
    conn, transport = await connect(config.redis, "dead letters")
    return Commander(conn, transport, lambda link, exc: None)


def _letters(reply: Reply) -> list[tuple[bytes, kit.DeadLetter, bytes]]:
    """``(dead-letter entry id, letter, channel)`` for each entry of an XRANGE reply."""
    out = []
    for entry in reply if isinstance(reply, list) else ():
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            continue
        entry_id, fields = entry[0], entry[1]
        assert isinstance(fields, list)
        values = dict(zip(fields[::2], fields[1::2], strict=False))
        data = values.get(b"msg")
        if not isinstance(entry_id, bytes) or not isinstance(data, bytes):
            continue
        error, deliveries, group = (
            values.get(b"error"),
            values.get(b"deliveries"),
            values.get(b"group"),
        )
        channel = values.get(b"ch")
        letter = kit.DeadLetter(
            data=data,
            group=group.decode(errors="replace") if isinstance(group, bytes) else "",
            error=error.decode(errors="replace") if isinstance(error, bytes) else "",
            deliveries=int(deliveries)
            if isinstance(deliveries, bytes) and deliveries.isdigit()
            else 0,
        )
        out.append((entry_id, letter, channel if isinstance(channel, bytes) else b""))
    return out
