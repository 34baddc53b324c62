"""Checks of config dataclasses, their types and their rules: a bad value (from a JSON or TOML config file,
or a caller) is a one-line error naming the field, not a traceback from deep inside a run."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_field_types(cfg: Any) -> None:
    """Check every field of the dataclass instance ``cfg`` against its annotation, normalizing in place
    (an integral float such as 1e5 becomes an int, an int becomes a float where a float is expected);
    raises ValueError naming the first field whose value has the wrong type."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        ok, converted = _convert(value, hints[f.name])
        if not ok:
            raise ValueError(f"config value {f.name}={value!r} has the wrong type: expected "
                             f"{_describe(hints[f.name])}")
        setattr(cfg, f.name, converted)


def check_rules(cfg: Any, what: str, rules: dict[str, tuple[bool, str]]) -> None:
    """Raise one ValueError naming every field of ``cfg`` whose rule fails; ``rules`` maps a field to
    (whether its value is valid, the rule in words, e.g. ">= 1"), ``what`` names the config."""
    bad = [f"{name}={getattr(cfg, name)!r} (must be {rule})" for name, (ok, rule) in rules.items() if not ok]
    if bad:
        raise ValueError(f"invalid {what} value(s): " + "; ".join(bad))


def parse_json_object(name: str, value: Any) -> Any:
    """``value`` parsed as a JSON object when it is text (as a command-line flag gives it), else as is."""
    if not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError(  # noqa: TRY004 - a bad config value: the CLI prints ValueErrors as one line
            f"{name} must be a JSON object such as '{{\"chunk_size\": 64}}', got {value!r}")
    return parsed


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin is typing.Union or origin is types.UnionType else None


def _convert(value: Any, tp: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits the annotation ``tp``, the value normalized to it)."""
    if tp is Any:
        return True, value
    if (args := _union_args(tp)) is not None:
        if value is None:
            return type(None) in args, value
        for arg in args:
            if arg is not type(None):
                ok, converted = _convert(value, arg)
                if ok:
                    return True, converted
        return False, value
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item = (typing.get_args(tp) or (Any,))[0]
        items = [_convert(v, item) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if tp is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):  # JSON true is not a number
        return False, value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int), value
    if tp is float:
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if tp is str:
        return isinstance(value, str), value
    return True, value  # a type these configs do not use: left to the config's own checks


def _describe(tp: Any) -> str:
    if (args := _union_args(tp)) is not None:
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        item = (typing.get_args(tp) or (Any,))[0]
        if item not in _NAMES:
            return "a list"
        return f"a list of {_describe(item).removeprefix('an ').removeprefix('a ')}s"
    if origin is dict or tp is dict:
        return "a JSON object"
    return _NAMES.get(tp, getattr(tp, "__name__", str(tp)))
