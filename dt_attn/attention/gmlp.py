"""gMLP's spatial gating unit (Liu et al. 2021, "Pay Attention to MLPs") as a causal token mixer.

The paper's block: Z = GELU(X U), split into (Z1, Z2); s(Z) = Z1 * (W LN(Z2) + b); Y = s(Z) V, with W a
learned (n x n) matrix over the sequence, initialised near 0, and b at 1 (so s(Z) ~ Z1 at first).

Adapted for a causal Decision Transformer whose rollout slides over an episode: W is *shift-invariant*, a
causal Toeplitz kernel W_ts = w_{t-s} over the last ``local_window`` tokens (lag 0 included; 0 beyond), and b
is one value per channel instead of one per position, so the unit means the same at every episode position
and has an incremental form (the last local_window - 1 normalised Z2 rows). U maps E to 2E (Z1, Z2 of width
E each), V maps E back to E; the block's channel mixer follows as for every token mixer. w starts at
N(0, 1e-3^2) and b at 1, as the paper does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dt_attn.attention.base import Capabilities, HiddenMixer, register
from dt_attn.checks import check_positive_int
from dt_attn.ops.reference import toeplitz_gate

#: standard deviation of the kernel's initial draw ("near 0")
KERNEL_INIT_STD = 1e-3


@register("gmlp")
class GatedMLP(HiddenMixer):
    """Causal spatial gating unit with a Toeplitz kernel over the last ``local_window`` tokens."""

    OPTIONS: ClassVar[dict[str, Any]] = {"local_window": 16}
    capabilities = Capabilities(
        kind="hidden", sizes=("local_window",), training_cost="O(T E (E + local_window))",
        state="the last local_window - 1 normalised gate rows", step_cost="O(E (E + local_window))")

    def __init__(self, embed_dim: int, n_heads: int, local_window: int = 16) -> None:
        super().__init__(embed_dim, n_heads)
        check_positive_int("local_window", local_window,
                           meaning="tokens the spatial kernel spans, itself included")
        self.local_window = local_window
        self.proj_in = nn.Linear(embed_dim, 2 * embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.kernel = nn.Parameter(torch.randn(local_window) * KERNEL_INIT_STD)  # w_0 .. w_{L-1}
        self.gate_bias = nn.Parameter(torch.ones(embed_dim))
        self.proj_out = nn.Linear(embed_dim, embed_dim)

    def residual_projections(self) -> list[nn.Linear]:
        return [self.proj_out]

    def _halves(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """u and the normalised z of each token, (B, T, E) each."""
        u, z = F.gelu(self.proj_in(h)).chunk(2, dim=-1)
        return u, self.norm(z)

    def _gate(self, u: Tensor, z: Tensor, earlier: Tensor) -> Tensor:
        """u * (sum_l w_l z_{t-l} + b) for the tokens of u, z (B, n, E), ``earlier`` holding the
        local_window - 1 rows before them."""
        if z.shape[1] == 0 or z.shape[0] == 0:
            return self.proj_out(u)  # no tokens (or no sequences): an empty output
        rows = torch.cat((earlier, z), dim=1).transpose(1, 2)  # (B, E, L - 1 + n)
        E = rows.shape[1]
        weight = self.kernel.flip(0).to(rows.dtype).view(1, 1, -1).expand(E, 1, -1)
        mixed = F.conv1d(rows, weight, groups=E).transpose(1, 2)  # (B, n, E)
        return self.proj_out(u * (mixed + self.gate_bias.to(mixed.dtype)))

    def forward(self, h: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """The parallel form, a causal depthwise convolution along the tokens; padded tokens' z rows are
        zeroed so that they mix into no other token."""
        u, z = self._halves(h)
        if pad_mask is not None:
            z = torch.where(pad_mask.to(device=z.device, dtype=torch.bool)[..., None], 0.0, z)
        return self._gate(u, z, z.new_zeros(z.shape[0], self.local_window - 1, z.shape[2]))

    def reference(self, h: Tensor) -> Tensor:
        """The explicit (T x T) Toeplitz product (``dt_attn.ops.reference.toeplitz_gate``)."""
        u, z = self._halves(h)
        return self.proj_out(toeplitz_gate(u, z, self.kernel, self.gate_bias))

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """local_window - 1 zero rows: the zeros before the sequence."""
        return torch.zeros(batch, self.local_window - 1, self.embed_dim, device=device, dtype=dtype)

    def step_many(self, h: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """n new tokens against the kept rows; keeps the newest local_window - 1 rows."""
        u, z = self._halves(h)
        out = self._gate(u, z, state)
        return out, torch.cat((state, z), dim=1)[:, z.shape[1] :]
