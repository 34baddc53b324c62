"""Exceptions raised by dataset loading and validation, and the one way an optional extra is imported."""

from __future__ import annotations

import importlib
from types import ModuleType


class DatasetError(ValueError):
    """A dataset is malformed, inconsistent or does not match its environment."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says where to put it."""


class OptionalDependencyError(ImportError, ValueError):
    """A package of an optional extra is missing; the message names the extra to install. A ValueError too,
    so that every entry point prints it as the one-line user error it is."""


def optional_import(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, a package of the ``extra`` install option, or raise OptionalDependencyError naming
    what needs it (``purpose``) and the command that installs it. The base install imports no extra at
    start-up: every such import goes through here, where it is used."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # a broken install (not merely an absent one) keeps its own reason in the line
        why = "" if isinstance(exc, ModuleNotFoundError) else f" ({exc})"
        raise OptionalDependencyError(
            f"{purpose} needs the {module.split('.')[0]} package{why}, which the [{extra}] extra installs: "
            f'pip install -e ".[{extra}]"') from None
