"""Argument checks shared by dt_attn's ops and layers (it imports nothing from dt_attn, so every module may
use it)."""

from __future__ import annotations


def check_positive_int(name: str, value: object, *, optional: bool = False, meaning: str = "") -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= 1 (or None, when ``optional``);
    ``meaning`` says in the message what the value counts."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        also = " or None" if optional else ""
        why = f" ({meaning})" if meaning else ""
        raise ValueError(f"{name} must be an int >= 1{also}{why}, got {value!r}")
