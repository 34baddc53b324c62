"""Typed configs for entry points: a dataclass is the single source of every option.

``add_config_arguments`` turns a dataclass into argparse flags, ``config_from_args`` builds the
dataclass from (defaults < preset < config file < command-line flags), and ``config_to_dict`` /
``format_config`` save and print every value next to the results.

What a field may say in its metadata:

* ``help``: the flag's help text; ``metavar``: the placeholder it shows;
* ``positional``: the argument is positional, with this argparse ``nargs`` ("?", "+", "*");
* on a field whose type is itself a config dataclass (a sweep's base training config), ``set_elsewhere``:
  the inner fields the outer config sets itself. Such a field is flattened: every other inner field is a
  flag and a config-file key of its own name, exactly as if the outer config declared it.

A config class with a ``PRESETS`` mapping (preset name -> field values) and a ``preset`` field takes
``--preset NAME``; the preset's values lie above the defaults and below a config file and the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")


class ConfigKey(NamedTuple):
    """One flag and config-file key of a config class: where its value lives and what it is."""

    name: str  # the key (the flag is --name with dashes)
    path: tuple[str, ...]  # attribute path from the outer config: ("jobs",) or ("train", "steps")
    field: dataclasses.Field
    type: Any
    default: Any


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def config_keys(cls: type) -> list[ConfigKey]:
    """Every flag of ``cls``, nested configs flattened (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            base = _field_default(f)
            skip = set(f.metadata.get("set_elsewhere", ()))
            keys += [ConfigKey(k.name, (f.name, *k.path), k.field, k.type, _get(base, k.path))
                     for k in config_keys(tp) if k.name not in skip]
        else:
            keys.append(ConfigKey(f.name, (f.name,), f, tp, _field_default(f)))
    names = [k.name for k in keys]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TypeError(f"{cls.__name__}: config keys {dupes} are declared twice (a nested config's field "
                        "shadows an outer one; list it in set_elsewhere)")
    return keys


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def _scalar_parser(tp: Any) -> tuple[Any, bool]:
    """(converter, is_list) for a field type such as int, float | None, list[int]."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (list, tuple):
        return args[0] if args else str, True
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return _scalar_parser(args[0])
    if origin is dict:
        return json.loads, False
    return tp, False


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per config key (dashes for underscores; a bare boolean flag means true), and
    ``--config FILE``."""
    for key in config_keys(cls):
        conv, is_list = _scalar_parser(key.type)
        if conv is bool:
            conv = _bool
        meta = key.field.metadata
        help_text = f"{meta.get('help', '')} (default: {key.default!r})".strip()
        if "positional" in meta:
            parser.add_argument(key.name, type=conv, nargs=meta["positional"], default=argparse.SUPPRESS,
                                metavar=meta.get("metavar", key.name.upper()), help=help_text)
            continue
        parser.add_argument(
            "--" + key.name.replace("_", "-"),
            dest=key.name,
            type=conv,
            nargs="+" if is_list else ("?" if conv is _bool else None),
            const=True if conv is _bool else None,
            default=argparse.SUPPRESS,
            metavar=meta.get("metavar"),
            help=help_text,
        )
    parser.add_argument(
        "--config", dest="config_file", default=None,
        help="JSON or TOML file with config values; command-line flags override it",
    )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict, with a clear error when it is unusable."""
    p = Path(path)
    if p.is_dir():
        raise SystemExit(f"error: config file {p} is a folder; pass a .json or .toml file")
    if not p.is_file():
        raise SystemExit(f"error: config file {p} does not exist")
    if p.suffix.lower() not in ("", ".json", ".toml"):
        raise SystemExit(f"error: config file {p}: {p.suffix} files are not read; write the config as JSON "
                         "(.json) or TOML (.toml)")
    try:
        text = p.read_text()
        if p.suffix.lower() == ".toml":
            if sys.version_info < (3, 11):
                raise SystemExit("error: TOML config files need Python >= 3.11; use JSON instead")
            import tomllib

            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise SystemExit(f"error: config file {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}")
    if not isinstance(values, dict):
        raise SystemExit(f"error: config file {p} holds a {type(values).__name__}; it must hold one object "
                         'of settings, e.g. {"steps": 1000}')
    return values


def with_preset(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over the values of the preset they name (``preset``), when ``cls`` has presets; an
    unknown preset name is left for the config's own check to refuse."""
    presets = getattr(cls, "PRESETS", None)
    name = values.get("preset")
    if not presets or name not in presets:
        return values
    return {**presets[name], **values}


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build the config from a dict of its keys (``config_keys``), rejecting unknown keys by name. A dict
    with a ``format`` key is a file dt-attn saved (a run's config.json): a training config of any format
    (``agents.upgrade.is_saved_run_config``) is read as the current one."""
    from agents.config import TrainConfig
    from agents.upgrade import is_saved_run_config, upgrade_run_config

    if cls is TrainConfig and is_saved_run_config(values):
        values = upgrade_run_config(values)
    elif "format" in values:
        values = {k: v for k, v in values.items() if k != "format"}
    keys = {k.name: k for k in config_keys(cls)}
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise SystemExit(
            f"error: unknown config key(s) {unknown} for {cls.__name__}; valid keys: "
            f"{', '.join(sorted(keys))}"
        )
    return _build(cls, {keys[name].path: value for name, value in values.items()})


def _build(cls: type[T], values: dict[tuple[str, ...], Any]) -> T:
    """``cls`` from values by attribute path; a nested config starts from its field's default."""
    hints = typing.get_type_hints(cls)
    own = {path[0]: v for path, v in values.items() if len(path) == 1}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if dataclasses.is_dataclass(hints[f.name]):
            inner = {path[1:]: v for path, v in values.items() if len(path) > 1 and path[0] == f.name}
            flat = with_preset(hints[f.name], {path[-1]: v for path, v in inner.items()})
            own[f.name] = dataclasses.replace(_field_default(f), **flat)
    return cls(**with_preset(cls, own))


def replace_config(cfg: T, **changes: Any) -> T:
    """``cfg`` with the given keys changed, a nested config's keys included (``dataclasses.replace`` by
    key)."""
    return config_from_dict(type(cfg), {**config_to_dict(cfg), **changes})


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Defaults, then the preset, then the ``--config`` file, then explicit flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config_file", None):
        values.update(load_config_file(args.config_file))
    names = {k.name for k in config_keys(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return config_from_dict(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Config -> JSON-ready dict of its keys (nested configs flattened, as the flags see them); what
    ``config_from_dict`` reads back."""
    full = dataclasses.asdict(cfg)
    return {k.name: _lookup(full, k.path) for k in config_keys(type(cfg))}


def _lookup(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        d = d[name]
    return d


def format_config(cfg: Any) -> str:
    """Every config value, one per line, for printing at the start of a run."""
    d = config_to_dict(cfg)
    width = max(len(k) for k in d)
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in d.items())
