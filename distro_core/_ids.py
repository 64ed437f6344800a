"""Message ids: random (version 4) UUIDs as canonical 36-character strings.

``str(uuid.uuid4())`` costs about 3 µs, several times what encoding a small message costs. This
module draws random bytes from the OS in blocks and formats a whole block of ids at once with a
few bulk byte operations, which yields the same kind of string (RFC 4122 version 4, variant
10xx, lower-case hex) for about a twentieth of the price.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

__all__ = ["new_id"]

_BATCH = 512  # ids made per refill: one system call for 8 KiB of randomness
_RECORD = 37  # an id and the newline that separates it from the next in a block
_TEMPLATE = b"xxxxxxxx-xxxx-4xxx-xxxx-xxxxxxxxxxxx\n" * _BATCH
# The version digit (hex digit 12) is the constant 4 of the template; the variant digit (hex
# digit 16) keeps two random bits and gets the variant bits 10: 0-f -> 8, 9, a, b.
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_VARIANT_DIGIT = 16
# Where each of an id's 32 hex digits goes in its record, past the dashes (after digits 8,
# 12, 16 and 20), leaving out the version digit and the variant digit.
_PLACES = [
    (digit + sum(digit >= cut for cut in (8, 12, 16, 20)), digit)
    for digit in range(32)
    if digit not in (12, _VARIANT_DIGIT)
]
_VARIANT_PLACE = _VARIANT_DIGIT + 3


def _block() -> list[str]:
    """``_BATCH`` fresh ids: 122 random bits each, as ``uuid.uuid4()`` draws them."""
    digits = os.urandom(16 * _BATCH).hex().encode("ascii")
    out = bytearray(_TEMPLATE)
    # One strided copy per digit position fills that digit of every id of the block.
    for place, digit in _PLACES:
        out[place::_RECORD] = digits[digit::32]
    out[_VARIANT_PLACE::_RECORD] = digits[_VARIANT_DIGIT::32].translate(_VARIANT)
    global _handing_out
    ids = _handing_out = out.decode("ascii").split("\n")
    ids.pop()  # the empty string after the last newline
    return ids


_handing_out: list[str] = []  # the block ids are being handed out from


def _forget() -> None:
    # A forked child must never hand out ids its parent already buffered: a list iterator
    # stops as soon as its list is emptied, and the next id comes from a fresh block.
    _handing_out.clear()


os.register_at_fork(after_in_child=_forget)

new_id: Callable[[], str] = itertools.chain.from_iterable(iter(_block, None)).__next__
"""Return a new random version 4 UUID string, like ``str(uuid.uuid4())``.

A C-level iterator chains the blocks (``_block`` is called when one runs out): calling its
``__next__`` costs about as much as a C function call, and two threads calling it at once
each get their own ids (it is not a generator, which would refuse the second)."""
