"""The pure parts of confirmed sends: the window of seen ids and the retransmit schedule."""

from __future__ import annotations

from distro_core._confirm import Retransmit, SeenWindow


def test_a_new_id_runs_a_repeat_gets_the_first_reply_again() -> None:
    window = SeenWindow()
    assert window.begin("a", 0.0) == (True, None)
    assert window.begin("a", 0.1) == (False, None)  # still being handled: send nothing
    window.done("a", b"reply-a", 0.2)
    assert window.begin("a", 0.3) == (False, b"reply-a")


def test_the_window_is_bounded_in_count_bytes_and_age() -> None:
    window = SeenWindow(size=3, max_bytes=10, max_age=5.0)
    for n in range(5):
        window.begin(str(n), float(n) * 0.1)
        window.done(str(n), b"x", float(n) * 0.1)
    assert len(window) == 3  # the oldest went first
    assert window.begin("0", 1.0) == (True, None)
    big = SeenWindow(size=100, max_bytes=10)
    for n in range(4):
        big.begin(str(n), 0.0)
        big.done(str(n), b"12345", 0.0)
    assert big._bytes <= 10
    old = SeenWindow(max_age=1.0)
    old.begin("a", 0.0)
    old.done("a", b"r", 0.0)
    assert old.begin("a", 2.0) == (True, None)  # forgotten: handled afresh


def test_a_reply_too_large_to_keep_still_marks_the_id_seen() -> None:
    window = SeenWindow(max_bytes=4)
    window.begin("a", 0.0)
    window.done("a", b"too large", 0.0)
    assert window.begin("a", 0.1) == (False, None)


def test_forget_lets_an_unfinished_id_run_again() -> None:
    window = SeenWindow()
    window.begin("a", 0.0)
    window.forget("a")
    assert window.begin("a", 0.1) == (True, None)


def test_retransmit_backs_off_and_ends_at_the_deadline() -> None:
    waits = Retransmit(first=0.05, longest=0.4).intervals(1.0)
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4]
    assert abs(sum(waits) - 1.0) < 1e-9
    assert max(waits) <= 0.4


def test_the_window_keeps_the_size_of_the_first_delivery() -> None:
    window = SeenWindow()
    window.begin("a", 0.0, 140)
    assert window.begin("a", 0.1, 20) == (False, None)
    assert window.first_size("a") == 140
    window.done("a", b"reply", 0.2)
    assert window.first_size("a") == 140  # kept with the reply
    assert window.first_size("unknown") == 0
    window.forget("a")
    assert window.first_size("a") == 0


def test_an_entry_ages_from_its_reply_not_from_its_first_delivery() -> None:
    window = SeenWindow(max_age=1.0)
    window.begin("a", 0.0)
    window.done("a", b"r", 0.9)  # the handlers took 0.9 s
    assert window.begin("a", 1.5) == (False, b"r")
    assert window.begin("a", 2.0) == (True, None)
