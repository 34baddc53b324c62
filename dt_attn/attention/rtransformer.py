"""R-Transformer (Wang et al. 2019): a local RNN before causal multi-head attention, as a token mixer.

The paper's layer runs a LocalRNN (a GRU over each position's window of the M preceding tokens, the
position included, zero-padded at the start) and then causal multi-head attention, each a sub-layer with a
residual. Here both are pre-LayerNorm sub-layers of one token mixer of h = ln1(x) (the block's residual
stream x): r = LocalRNN(h) (the GRU's last hidden state, width E), g = LayerNorm(h + r), and the update
added to x is ``r + proj(attention(q, k, v of g))`` with softmax attention (optionally windowed: the
streaming rollout sets ``window``). The block's channel mixer follows. The local RNN sees M tokens whatever
the position (a sliding window), so nothing depends on absolute position; the paper's code also hard-codes
CUDA and a maximum length, which this form does not need.

Incremental state: the last M - 1 inputs h and the attention's KV cache; a step runs the GRU over M inputs
per new token. The ``window`` bounds the attention alone: the local RNN still reads M - 1 tokens before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dt_attn.attention.base import Capabilities, HiddenMixer, attend_float32, build_attention, register
from dt_attn.attention.window import check_window
from dt_attn.checks import check_positive_int
from dt_attn.ops.reference import local_rnn


@dataclass
class RTransformerState:
    """The last local_window - 1 inputs (B, M - 1, E) and the attention's incremental state."""

    inputs: Tensor
    attention: Any


@register("r-transformer")
class RTransformer(HiddenMixer):
    """Local GRU over the last ``local_window`` tokens, then causal softmax attention."""

    OPTIONS: ClassVar[dict[str, Any]] = {"local_window": 6, "window": None}
    capabilities = Capabilities(
        kind="hidden", window=True, sizes=("local_window",),
        training_cost="O(T M E^2) for the GRU + O(T^2 E) attention",
        state="the last M - 1 inputs and a KV cache (a ring with a window)",
        step_cost="O(M E^2 + t E), O(M E^2 + window E) with a window")

    def __init__(self, embed_dim: int, n_heads: int, local_window: int = 6,
                 window: int | None = None) -> None:
        super().__init__(embed_dim, n_heads)
        check_positive_int("local_window", local_window,
                           meaning="tokens the local RNN reads, itself included")
        check_window(window)
        self.local_window = local_window
        self.rnn = nn.GRU(embed_dim, embed_dim, batch_first=True)
        self.norm = nn.LayerNorm(embed_dim)
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.attn = build_attention("softmax", window=window)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def residual_projections(self) -> list[nn.Linear]:
        return [self.proj]

    def _local(self, h: Tensor, earlier: Tensor) -> Tensor:
        """The GRU's last state over each new token's window; ``earlier`` holds the M - 1 inputs before h."""
        B, n, E = h.shape
        if B * n == 0:
            return h.new_zeros(B, n, E)
        rows = torch.cat((earlier, h), dim=1)  # (B, M - 1 + n, E)
        windows = rows.unfold(1, self.local_window, 1).permute(0, 1, 3, 2)  # (B, n, M, E)
        _, last = self.rnn(windows.reshape(B * n, self.local_window, E))
        return last[0].view(B, n, E)

    def _heads(self, g: Tensor) -> Tensor:
        B, T, E = g.shape
        H = self.n_heads
        return self.qkv(self.norm(g)).view(B, T, 3, H, E // H).permute(2, 0, 3, 1, 4)

    def _merge(self, a: Tensor) -> Tensor:
        B, H, T, D = a.shape
        return self.proj(a.transpose(1, 2).reshape(B, T, H * D))

    def forward(self, h: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """The parallel form; padded inputs are zeroed before the local RNN and masked in the attention."""
        if pad_mask is not None:
            h = torch.where(pad_mask.to(device=h.device, dtype=torch.bool)[..., None], 0.0, h)
        r = self._local(h, h.new_zeros(h.shape[0], self.local_window - 1, h.shape[2]))
        q, k, v = self._heads(h + r)
        return r + self._merge(attend_float32(self.attn, q, k, v, pad_mask))

    def reference(self, h: Tensor) -> Tensor:
        """The local RNN one position at a time (``dt_attn.ops.reference.local_rnn``), then the attention's
        explicit weights."""
        r = local_rnn(h, self.rnn, self.local_window)
        q, k, v = self._heads(h + r)
        return r + self._merge(self.attn.reference(q, k, v))

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> RTransformerState:
        """M - 1 zero inputs (the zero padding before the sequence) and an empty KV cache."""
        D = self.embed_dim // self.n_heads
        return RTransformerState(
            torch.zeros(batch, self.local_window - 1, self.embed_dim, device=device, dtype=dtype),
            self.attn.init_state(batch, self.n_heads, D, D, device=device, dtype=dtype))

    def step_many(self, h: Tensor, state: RTransformerState) -> tuple[Tensor, RTransformerState]:
        """n new tokens: their local RNN windows from the kept inputs, then the attention's steps."""
        r = self._local(h, state.inputs)
        q, k, v = self._heads(h + r)
        a, attention = self.attn.step_many(q, k, v, state.attention)
        inputs = torch.cat((state.inputs, h), dim=1)[:, h.shape[1] :]
        return r + self._merge(a), RTransformerState(inputs, attention)
