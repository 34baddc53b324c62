"""Typed configs for entry points: a dataclass is the single source of every option.

``add_config_arguments`` turns a dataclass into argparse flags, ``config_from_args`` builds the
dataclass from (defaults < config file < command-line flags), and ``config_to_dict`` /
``format_config`` save and print every value next to the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _field_type(cls: type, field: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(cls)
    return hints[field.name]


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
    """Add one ``--flag`` per dataclass field (dashes for underscores; a bare boolean flag means true)."""
    for f in dataclasses.fields(cls):
        conv, is_list = _scalar_parser(_field_type(cls, f))
        if conv is bool:
            conv = _bool
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=conv,
            nargs="+" if is_list else ("?" if conv is _bool else None),
            const=True if conv is _bool else None,
            default=argparse.SUPPRESS,
            help=f"{help_text} (default: {default!r})".strip(),
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
        raise SystemExit(f"error: config file {p} holds a {type(values).__name__}; it must hold one object of "
                         'settings, e.g. {"steps": 1000}')
    return values


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build the dataclass from a dict, rejecting unknown keys by name. A dict with a ``format`` key is a
    file dt-attn saved (a run's config.json): a training config of any format is read as the current one."""
    if "format" in values:
        from agents.config import TrainConfig
        from agents.upgrade import upgrade_run_config

        values = upgrade_run_config(values) if cls is TrainConfig else {k: v for k, v in values.items() if k != "format"}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise SystemExit(
            f"error: unknown config key(s) {unknown} for {cls.__name__}; valid keys: {', '.join(sorted(names))}"
        )
    return cls(**values)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Defaults, then the ``--config`` file, then explicit flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config_file", None):
        values.update(load_config_file(args.config_file))
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values.update({k: v for k, v in vars(args).items() if k in names})
    return config_from_dict(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> JSON-ready dict."""
    return dataclasses.asdict(cfg)


def format_config(cfg: Any) -> str:
    """Every config value, one per line, for printing at the start of a run."""
    d = config_to_dict(cfg)
    width = max(len(k) for k in d)
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in d.items())
