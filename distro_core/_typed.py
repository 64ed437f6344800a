"""Typed payloads: a handler whose payload parameter is annotated with a type gets the payload
validated and converted before it runs, and a value of such a type it returns converted back
for the reply (:func:`typed`, called once per handler at registration).

The convention, read from the handler's required positional parameters:

* ``def h(msg)``, ``def h(msg: distro.Message)`` (or ``Any``, ``object``): the message, as
  always; nothing is converted and the handler's calls cost nothing more.
* ``def h(order: Order)``: one parameter annotated with another type takes the payload,
  converted to ``Order``.
* ``def h(msg, order: Order)``: two parameters take the message and the payload (converted
  when the second is annotated; as it is otherwise).
* A return annotation naming a model class (``-> Receipt``) converts what the handler returns;
  so does any typed handler, whatever it returns (a :class:`~distro_core.Reply`'s payload too).

Which converter handles a type:

* a pydantic model (``pydantic.BaseModel``): ``model_validate`` / ``model_dump(mode="json")``;
* a msgspec ``Struct``: ``msgspec.convert`` / ``msgspec.to_builtins``;
* anything else (attrs classes, dataclasses, ``list[Order]``, ``int``...): cattrs, the attrs
  project's converter (its JSON preset). It is an optional dependency: ``distro-core[cattrs]``.

A type no converter handles (a plain class, a missing extra) is a ``TypeError`` when the handler
is registered. A payload that does not validate raises :class:`~distro_core.InvalidPayload`
before the handler runs, naming each field that failed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

from ._exceptions import InvalidPayload
from ._message import Message
from ._reply import Reply

if TYPE_CHECKING:
    from ._handlers import Handler

__all__ = ["typed"]

Load = Callable[[Any], Any]
"""Converts a payload to the annotated type; raises InvalidPayload."""
Dump = Callable[[Any], Any]
"""Converts a handler's return value to JSON values (others pass through unchanged)."""

_PLAIN = (inspect.Parameter.empty, Any, object)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_JSON_TYPES = frozenset({type(None), bool, int, float, str, list, dict})


def typed(fn: Handler, is_async: bool) -> Handler | None:
    """The handler to register in place of ``fn`` when ``fn`` takes a typed payload or
    returns a model (see the module docstring); None when it takes a plain message.

    :raises TypeError: an annotation no converter handles, or one that cannot be resolved.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return None
    required = [
        p
        for p in signature.parameters.values()
        if p.kind in _POSITIONAL and p.default is inspect.Parameter.empty
    ]
    if len(required) not in (1, 2):
        return None
    name = getattr(fn, "__qualname__", None) or repr(fn)
    takes_msg = len(required) == 2
    target = _resolve(fn, required[-1].annotation, name, required[-1].name)
    load = None if _is_plain(target) else _loader(target, name)
    returns = _resolve(fn, signature.return_annotation, name, "return", strict=False)
    if load is None and not takes_msg and not _is_model(returns):
        return None
    call = _make_call(fn, is_async, load, takes_msg, _dump)
    functools.update_wrapper(call, fn)
    return call


def _make_call(
    fn: Handler, is_async: bool, load: Load | None, takes_msg: bool, dump: Dump
) -> Handler:
    call: Any = fn
    if is_async:

        async def run_async(msg: Message) -> Any:
            payload = msg.payload if load is None else load(msg.payload)
            result = await (call(msg, payload) if takes_msg else call(payload if load else msg))
            return dump(result)

        return run_async

    def run(msg: Message) -> Any:
        payload = msg.payload if load is None else load(msg.payload)
        result = call(msg, payload) if takes_msg else call(payload if load else msg)
        if result is not None and inspect.isawaitable(result):
            return _dump_later(result, dump)
        return dump(result)

    return run


async def _dump_later(result: Awaitable[Any], dump: Dump) -> Any:
    return dump(await result)


def _is_plain(annotation: Any) -> bool:
    if annotation is None or any(annotation is plain for plain in _PLAIN):
        return True
    return isinstance(annotation, type) and issubclass(annotation, Message)


_LAST_NAME = re.compile(r"(?:^|\.)Message$")


def _resolve(fn: Any, annotation: Any, name: str, what: str, strict: bool = True) -> Any:
    """The annotation as an object (string annotations evaluated in the handler's module).

    :raises TypeError: with ``strict``, it names something the module does not define.
    """
    if not isinstance(annotation, str):
        return annotation
    target = inspect.unwrap(fn if inspect.isroutine(fn) else type(fn).__call__)
    target = getattr(target, "__func__", target)  # a bound method's function
    namespace = getattr(target, "__globals__", {})
    code, cells = getattr(target, "__code__", None), getattr(target, "__closure__", None) or ()
    local = {}  # the variables the function closes over (a type defined in the enclosing one)
    for var, cell in zip(code.co_freevars if code else (), cells, strict=False):
        try:
            local[var] = cell.cell_contents
        except ValueError:  # not set yet
            pass
    try:
        return eval(annotation, namespace, local)  # as typing.get_type_hints, for one name
    except Exception:
        # Only typing knows it (``if TYPE_CHECKING:``): a Message is the usual case.
        if not strict or _LAST_NAME.search(annotation.strip()):
            return None
        raise TypeError(
            f"handler {name}: cannot resolve the annotation {annotation!r} of {what!r} "
            "(define the type at module level, or import it outside 'if TYPE_CHECKING:')"
        ) from None


def _is_model(annotation: Any) -> bool:
    if not isinstance(annotation, type):
        return False
    return (
        attrs.has(annotation)
        or dataclasses.is_dataclass(annotation)
        or _pydantic(annotation)
        or _msgspec(annotation)
    )


def _pydantic(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")  # a pydantic model means pydantic is imported
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


def _msgspec(cls: type) -> bool:
    msgspec = sys.modules.get("msgspec")
    return msgspec is not None and issubclass(cls, msgspec.Struct)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)


# -- loading ------------------------------------------------------------------------------


def _loader(annotation: Any, name: str) -> Load:
    """The function converting a payload to ``annotation``, built once.

    :raises TypeError: no converter handles it.
    """
    if isinstance(annotation, type) and _pydantic(annotation):
        return _pydantic_loader(annotation)
    if isinstance(annotation, type) and _msgspec(annotation):
        return _msgspec_loader(annotation)
    return _cattrs_loader(annotation, name)


def _pydantic_loader(cls: Any) -> Load:
    import pydantic

    validate = cls.model_validate
    type_name = _type_name(cls)

    def load(payload: Any) -> Any:
        try:
            return validate(payload)
        except pydantic.ValidationError as exc:
            errors = [(_path(error["loc"]), error["msg"]) for error in exc.errors()]
            raise InvalidPayload(type_name, errors) from None

    return load


def _path(location: Any) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if type(part) is int else (f".{part}" if path else str(part))
    return path


_MISSING = re.compile(r"Object missing required field `([^`]*)`")
_MSGSPEC_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _msgspec_loader(cls: Any) -> Load:
    import msgspec

    convert = msgspec.convert
    type_name = _type_name(cls)

    def load(payload: Any) -> Any:
        try:
            return convert(payload, cls)
        except msgspec.ValidationError as exc:
            found = _MSGSPEC_AT.match(str(exc))
            assert found is not None  # the pattern matches any text
            path, problem = (found["path"] or "").lstrip("."), found["problem"]
            missing = _MISSING.fullmatch(problem)
            if missing:  # said of the object: name the field
                path = f"{path}.{missing[1]}" if path else missing[1]
                problem = "required field missing"
            raise InvalidPayload(type_name, [(path, problem)]) from None

    return load


@functools.cache
def _cattrs_converter() -> Any:
    """The cattrs converter (its JSON preset), made on first use: cattrs is imported only
    when some handler needs it."""
    try:
        from cattrs.preconf.json import make_converter
    except ImportError:
        return None
    return make_converter()


def _cattrs_loader(annotation: Any, name: str) -> Load:
    converter = _cattrs_converter()
    kind = (
        "an attrs class"
        if isinstance(annotation, type) and attrs.has(annotation)
        else "a dataclass"
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation)
        else "a type"
    )
    if converter is None:
        raise TypeError(
            f"handler {name} takes {_type_name(annotation)}, {kind}: converting payloads to it "
            "needs cattrs, which is not installed: pip install 'distro-core[cattrs]'"
        )
    if isinstance(annotation, type) and annotation not in _JSON_TYPES and not _is_model(annotation):
        raise TypeError(
            f"handler {name} takes {_type_name(annotation)}, which no converter handles: "
            "annotate the payload with an attrs class, a dataclass, a pydantic model or a "
            "msgspec Struct (or leave it unannotated to get the message)"
        )
    import cattrs

    try:
        structure = converter.get_structure_hook(annotation)
    except cattrs.errors.StructureHandlerNotFoundError as exc:
        raise TypeError(f"handler {name} takes {_type_name(annotation)}: {exc}") from None
    type_name = _type_name(annotation)

    def load(payload: Any) -> Any:
        try:
            return structure(payload, annotation)
        except Exception as exc:  # cattrs raises what its hooks raise, grouped
            errors = []
            for line in cattrs.transform_error(exc):
                problem, _, path = line.rpartition(" @ $")
                errors.append((path.lstrip("."), problem) if problem else ("", line))
            raise InvalidPayload(type_name, errors) from None

    return load


# -- dumping ------------------------------------------------------------------------------


def _dump(value: Any) -> Any:
    """``value`` as JSON values when it is a model (or a Reply carrying one); else as it is."""
    kind = type(value)
    if kind in _JSON_TYPES:
        return value
    if kind is Reply:
        payload = _dump(value.payload)
        return value if payload is value.payload else Reply(payload, value.headers)
    dumper = _dumpers.get(kind)
    if dumper is None:
        dumper = _dumpers[kind] = _dumper(kind)
    return dumper(value)


_dumpers: dict[type, Dump] = {}
"""One dump function per returned type, found once (types are few and live as long as the
process)."""


def _dumper(kind: type) -> Dump:
    if _pydantic(kind):
        return functools.partial(kind.model_dump, mode="json")  # type: ignore[attr-defined]
    if _msgspec(kind):
        import msgspec

        return msgspec.to_builtins
    converter = _cattrs_converter()
    if converter is not None and (attrs.has(kind) or dataclasses.is_dataclass(kind)):
        return converter.unstructure  # type: ignore[no-any-return]
    return _same


def _same(value: Any) -> Any:
    return value
