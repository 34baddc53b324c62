"""Inverted dropout whose CPU mask comes from uniform samples instead of ``bernoulli_``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero each entry of ``x`` with probability ``p`` and scale the rest by 1 / (1 - p) when training.

    Same distribution as ``F.dropout``; on CPU the mask is ``uniform_() >= p``, which measured about
    half the cost of torch's ``bernoulli_`` mask at this model's sizes (the random draws dominate).
    Other devices use ``F.dropout`` (fused there). Draws from torch's global generator, so a seeded
    run is reproducible and a restored generator state resumes it exactly.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    # Draw in at least float32 so that a low-precision x still gets an exact keep probability.
    draw = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    mask = torch.empty(x.shape, dtype=draw, device=x.device).uniform_().ge_(p).mul_(1.0 / (1.0 - p))
    return x * mask.to(x.dtype)


class Dropout(nn.Module):
    """``nn.Dropout``'s interface around :func:`dropout`."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """x with dropout applied in training mode, x itself in eval mode."""
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
