"""Message ids: canonical random uuid4 strings, never repeated, not even across a fork."""

from __future__ import annotations

import os
import uuid

import pytest

import distro_core as distro


def test_ids_are_canonical_version_4_uuids_and_unique() -> None:
    ids = [distro.message({"uri": "/x"}).id for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_every_hex_digit_appears_in_each_random_position() -> None:
    # 122 random bits: across many ids each free position takes all 16 digits.
    ids = [distro.message({"uri": "/x"}).id.replace("-", "") for _ in range(3000)]
    for position in range(32):
        digits = {text[position] for text in ids}
        if position == 12:
            assert digits == {"4"}
        elif position == 16:
            assert digits == set("89ab")
        else:
            assert len(digits) == 16, position


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    distro.message({"uri": "/warm"})  # the parent now holds a batch of ready ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, ",".join(distro.message({"uri": "/c"}).id for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    parent = {distro.message({"uri": "/p"}).id for _ in range(50)}
    assert len(child) == 50
    assert not child & parent, "the child handed out ids its parent also handed out"


def test_threads_making_ids_at_once_each_get_their_own() -> None:
    import threading

    made: list[list[str]] = []

    def make() -> None:
        made.append([distro.message({"uri": "/t"}).id for _ in range(3000)])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ids = [text for batch in made for text in batch]
    assert len(ids) == 12000
    assert len(set(ids)) == len(ids)
