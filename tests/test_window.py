"""The write-first ring buffer behind the windowed incremental forms (softmax's KV cache, cosFormer).

That step_many calls of any length (fed in pieces) equal the parallel form is checked for every
mechanism in test_attention_properties."""

from __future__ import annotations

import pytest
import torch

from dt_attn import build_attention
from dt_attn.attention.window import RING_SPARE, ring_capacity, ring_distances, ring_layout


@pytest.mark.parametrize("window", [1, 3, 8])
def test_ring_layout_matches_a_simulated_ring(window):
    """Write the positions into a list of slots call by call; every query must see exactly the
    slots holding positions within its window, and never a slot overwritten too early."""
    cap = ring_capacity(window)
    held = [-1] * cap  # position in each slot (-1: empty)
    position = 0
    for n in [1, RING_SPARE + 1, 2, 3] * 6 + [RING_SPARE + 1] * 4:
        layout = ring_layout(position, window, n, torch.device("cpu"))
        for i, slot in enumerate(layout.slots.tolist()):
            held[slot] = position + i
        for i in range(n):
            q = position + i
            expected = [0 <= p <= q and p > q - window for p in held]
            assert layout.visible[i].tolist() == expected
            assert sum(expected) == min(window, q + 1)  # nothing it should see was overwritten
            seen = layout.visible[i]
            assert ring_distances(layout)[i][seen].tolist() == [q - p for p, e in zip(held, expected) if e]
        position += n


def test_ring_layout_refuses_more_tokens_than_the_spare_slots_allow():
    with pytest.raises(ValueError, match="step_in_pieces"):
        ring_layout(0, 4, RING_SPARE + 2, torch.device("cpu"))


@pytest.mark.parametrize("name", ["softmax", "cosformer"])
def test_layouts_cached_during_inference_still_work_with_autograd(name):
    """The ring layouts and cosFormer's rotations are cached; one first built under inference_mode
    must not be an inference tensor, or a later differentiable step at the same position fails."""
    attn = build_attention(name, window=4)
    q, k, v = (torch.randn(1, 1, 6, 8) for _ in range(3))
    with torch.inference_mode():
        state = attn.init_state(1, 1, 8, 8)
        attn.step_many(q, k, v, state)
    qg = q.clone().requires_grad_()
    out, _ = attn.step_many(qg, k, v, attn.init_state(1, 1, 8, 8))
    out.sum().backward()
    assert qg.grad is not None and torch.isfinite(qg.grad).all()
