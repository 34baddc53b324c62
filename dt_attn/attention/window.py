"""Sliding-window bookkeeping shared by the mechanisms whose incremental state is a ring buffer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from dt_attn.checks import check_positive_int

#: Extra ring slots beyond the window. New tokens are written before they are read, so a call may
#: add up to RING_SPARE + 1 tokens without overwriting a key its first query still sees; longer
#: calls are cut into pieces of that size (``step_in_pieces``).
RING_SPARE = 7


def check_window(window: int | None) -> None:
    """Raise ValueError unless ``window`` is None (full causal attention) or an int >= 1."""
    check_positive_int("window", window, optional=True,
                       meaning="the number of most recent keys a query sees, itself included; None: all")


def ring_capacity(window: int) -> int:
    """Slots of the ring buffer that serves a sliding window of ``window`` keys."""
    return window + RING_SPARE


def ring_fits(n: int) -> bool:
    """Whether n new tokens fit one ``ring_layout``; longer calls go through ``step_in_pieces``."""
    return n <= RING_SPARE + 1


def step_in_pieces(step_many: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   state: Any) -> tuple:
    """Feed n tokens (dim 2) through ``step_many`` in consecutive pieces that each fit the ring."""
    outs = []
    for lo in range(0, q.shape[2], RING_SPARE + 1):
        piece = slice(lo, lo + RING_SPARE + 1)
        out, state = step_many(q[:, :, piece], k[:, :, piece], v[:, :, piece], state)
        outs.append(out)
    return torch.cat(outs, dim=2), state


class RingLayout(NamedTuple):
    """Where n new tokens go in the ring and which slots each of them may attend to."""

    key: tuple[int, int, int, str]  # (canonical position, window, n, device): equal keys, equal layouts
    slots: torch.Tensor  # (n,) long: ring slot of each new token
    visible: torch.Tensor  # (n, capacity) bool: True where query i may see the key in that slot


def ring_layout(position: int, window: int, n: int, device: torch.device | str) -> RingLayout:
    """The layout of n new tokens at positions ``position .. position+n-1`` (n <= RING_SPARE + 1).

    Slot s of a ring of ``ring_capacity(window)`` slots holds the latest position p = s mod capacity.
    The new keys are written first; query i then sees the slots whose position p satisfies
    ``position + i - window < p <= position + i`` (within its window and causal; never an empty
    slot). The spare slots guarantee the oldest key the first query sees is still there. The
    layout repeats with period ``capacity`` once the ring is full, so it is cached.
    """
    if n < 1 or not ring_fits(n):
        raise ValueError(f"ring_layout takes 1 to {RING_SPARE + 1} new tokens, got {n}; feed them "
                         "with step_in_pieces")
    cap = ring_capacity(window)
    canonical = position if position < cap else cap + position % cap
    return _layout(canonical, window, n, str(device))


def ring_distances(layout: RingLayout) -> torch.Tensor:
    """(n, capacity) long: each new query's position minus the position held in each slot."""
    position, window, n, device = layout.key
    query_pos, slot_pos = _positions(position, window, n)
    return (query_pos - slot_pos).to(device)


def _positions(position: int, window: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions (n, 1) and the position each slot holds after the write (capacity,), negative if
    empty."""
    cap = ring_capacity(window)
    last = position + n - 1  # newest position held after the write
    return position + torch.arange(n)[:, None], last - (last - torch.arange(cap)) % cap


@functools.lru_cache(maxsize=4096)
def _layout(position: int, window: int, n: int, device: str) -> RingLayout:
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for backward later
        query_pos, slot_pos = _positions(position, window, n)
        visible = (slot_pos >= 0) & (slot_pos <= query_pos) & (slot_pos > query_pos - window)
        slots = (position + torch.arange(n)) % ring_capacity(window)
        return RingLayout((position, window, n, device), slots.to(device), visible.to(device))
