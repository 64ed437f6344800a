"""Reading a transport's options: one reader, the same checks and messages for every transport.

A transport's :meth:`~distro_core.transport.Transport.from_options` reads each option it knows
with a typed method, then calls :meth:`Options.finish`, which refuses whatever is left::

    @classmethod
    def from_options(cls, options):
        opts = Options(cls.name, options)
        host = opts.string("address", "127.0.0.1")
        port = opts.port("port", 0)
        timeout = opts.number("connect_timeout", 5.0, positive=True)
        return cls(host, port, timeout, options=opts.finish())

Pure: no I/O.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

__all__ = ["Options"]

T = TypeVar("T")

_MISSING: Any = object()


class Options:
    """The options a user gave one transport, read one at a time.

    :param transport: the transport's name, for error messages.
    :param given: the options as the user gave them.
    :raises TypeError: ``given`` is not a mapping with string keys.
    """

    __slots__ = ("_given", "_taken", "transport")

    def __init__(self, transport: str, given: Mapping[str, Any]) -> None:
        if not isinstance(given, Mapping):
            raise TypeError(f"transport {transport!r} options must be a mapping, got {given!r}")
        bad = [key for key in given if not isinstance(key, str)]
        if bad:
            raise TypeError(f"transport {transport!r} option names must be strings, got {bad!r}")
        self.transport = transport
        self._given = dict(given)
        self._taken: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self._given

    def get(self, name: str, default: T, check: Callable[[Any], T] | None = None) -> T:
        """The option ``name``, or ``default`` when it is not given.

        :param check: called with the given value; returns the value to use, or raises
            ``ValueError`` or ``TypeError`` (its text is prefixed with the option's name).
        """
        self._taken.add(name)
        value = self._given.get(name, _MISSING)
        if value is _MISSING:
            return default
        if check is None:
            return value  # type: ignore[no-any-return]
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{self.transport} option {name!r}: {exc}") from None

    def _bad(self, name: str, want: str, value: object) -> ValueError:
        return ValueError(f"{self.transport} option {name!r} must be {want}, got {value!r:.80}")

    def string(self, name: str, default: str, *, empty: bool = False) -> str:
        """A string option (non-empty unless ``empty``)."""
        value = self.get(name, default)
        if not isinstance(value, str) or (not value and not empty):
            raise self._bad(name, "a string" if empty else "a non-empty string", value)
        return value

    def optional_string(self, name: str) -> str | None:
        """A string option that may be absent or None."""
        value = self.get(name, None)
        if value is not None and not isinstance(value, str):
            raise self._bad(name, "a string or None", value)
        return value

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """An integer option (``bool`` is refused), within ``minimum`` and ``maximum``."""
        value = self.get(name, default)
        if (
            type(value) is not int
            or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)
        ):
            low = "" if minimum is None else f" >= {minimum}"
            high = "" if maximum is None else f" <= {maximum}"
            both = " and".join(p for p in (low, high) if p)
            raise self._bad(name, f"an integer{both}", value)
        return value

    def port(self, name: str = "port", default: int = 0) -> int:
        """A port number, 0 to 65535 (0: any free port, for a server)."""
        value = self.get(name, default)
        if type(value) is not int or not 0 <= value <= 65535:
            raise self._bad(name, "an integer 0..65535", value)
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        positive: bool = False,
        minimum: float | None = None,
    ) -> float:
        """A finite real number option, as a float (``bool`` is refused)."""
        value = self.get(name, default)
        ok = (
            type(value) in (int, float)
            and math.isfinite(value)
            and (not positive or value > 0)
            and (minimum is None or value >= minimum)
        )
        if not ok:
            want = "a positive number" if positive else "a finite number"
            if minimum is not None:
                want += f" >= {minimum:g}"
            raise self._bad(name, want, value)
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        """A boolean option (only ``True`` or ``False``)."""
        value = self.get(name, default)
        if type(value) is not bool:
            raise self._bad(name, "True or False", value)
        return value

    def choice(self, name: str, default: T, choices: Collection[T]) -> T:
        """One of ``choices``."""
        value = self.get(name, default)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise self._bad(name, f"one of {listed}", value)
        return value

    def instance(self, name: str, default: T, cls: type[T]) -> T:
        """An instance of ``cls`` (a ``TypeError`` otherwise)."""
        value = self.get(name, default)
        if not isinstance(value, cls):
            raise TypeError(
                f"{self.transport} option {name!r} must be a {cls.__name__}, "
                f"got {type(value).__name__}"
            )
        return value

    def finish(self) -> Mapping[str, Any]:
        """Refuse every option that was given but not read, and return the given options
        (read-only) for :attr:`Transport.options <distro_core.transport.Transport.options>`.

        :raises TypeError: names every unknown option, and the ones the transport takes.
        """
        unknown = sorted(set(self._given) - self._taken)
        if unknown:
            raise TypeError(
                f"transport {self.transport!r} got unknown option(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(self._taken)) or 'none'}"
            )
        return types.MappingProxyType(self._given)
