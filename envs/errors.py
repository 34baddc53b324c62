"""Exceptions raised by dataset loading and validation."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset is malformed, inconsistent or does not match its environment."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says where to put it."""


class OptionalDependencyError(ImportError):
    """An optional extra (e.g. ``minari``) is needed for the requested dataset."""
