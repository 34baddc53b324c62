"""Sliding-window bookkeeping shared by the mechanisms whose incremental state is a ring buffer."""

from __future__ import annotations

import functools

import torch


def check_window(window: int | None) -> None:
    """Raise ValueError unless ``window`` is None or a positive int."""
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            f"window must be a positive int (the number of most recent keys a query sees, itself "
            f"included) or None for full causal attention, got {window!r}"
        )


def ring_step_layout(position: int, window: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Which keys each of n new tokens sees, and where the new tokens go in the ring buffer.

    The new tokens sit at positions ``position .. position+n-1``; they attend over the ring
    buffer as it was *before* this call (``window`` slots; slot j holds the latest earlier
    position equal to j mod window) followed by the n new keys. Returns ``visible`` (n,
    window + n) bool, True where query i may see that key (within the window and causal), and
    ``slots`` (long), the ring slots the last min(n, window) new tokens are written to.
    Reading before writing matters: writing first would overwrite keys the earlier queries
    still see. The layout repeats with period ``window`` once the buffer is full, so it is cached.
    """
    key = position if position < window else window + position % window
    return _layout(key, window, n, str(device))


@functools.lru_cache(maxsize=4096)
def _layout(position: int, window: int, n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    j = torch.arange(window)
    slot_pos = position - 1 - (position - 1 - j) % window  # position held by slot j (negative: empty)
    query_pos = position + torch.arange(n)[:, None]
    old = (slot_pos >= 0) & (slot_pos > query_pos - window)
    m = torch.arange(n)
    new = (m[None, :] <= m[:, None]) & (m[:, None] - m[None, :] < window)
    visible = torch.cat([old, new], dim=1)
    first = max(0, n - window)  # only the last `window` new tokens survive in the buffer
    slots = (position + torch.arange(first, n)) % window
    return visible.to(device), slots.to(device)
