"""N-gram masked self-attention (Chelba et al. 2020): causal softmax attention over the last ``n`` tokens
only, in training and in rollouts alike (N of 4 to 8 lost little in their translation models).

The truncation is part of the trained function, unlike softmax's optional ``window`` (which the streaming
rollout sets): every form attends to the last ``n`` tokens. In a Decision Transformer, with three tokens per
timestep (R, s, a), ``n = 3m - 1`` lets the state token s_t see exactly the last m timesteps' returns and
states and the m - 1 actions between them (the default n = 8: m = 3). The rollout state is a ring of n keys
and values (plus 7 spare slots), so a step costs O(n d) whatever the episode's length.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dt_attn.attention.base import Capabilities, register
from dt_attn.attention.softmax import SoftmaxAttention
from dt_attn.checks import check_positive_int
from dt_attn.ops.reference import ngram_weights


@register("ngram")
class NgramAttention(SoftmaxAttention):
    """Causal softmax over the last ``n`` tokens (a query and its n - 1 predecessors)."""

    OPTIONS: ClassVar[dict[str, Any]] = {"n": 8}
    capabilities = Capabilities(
        kind="qkv", sizes=("n",), training_cost="O(T^2 d) masked (fused kernel), O(T n d) of it used",
        state="a ring of n keys and values (+ 7 spare slots)", step_cost="O(n d)")

    def __init__(self, n: int = 8) -> None:
        check_positive_int("n", n, meaning="the tokens a query sees, itself included")
        super().__init__(window=n)
        self.n = n

    def weights(self, q: torch.Tensor, k: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """softmax over the last n keys (``dt_attn.ops.reference.ngram_weights``)."""
        return ngram_weights(q, k, n=self.n, pad_mask=pad_mask)
