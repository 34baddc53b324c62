"""A causal GPT-style transformer stack whose attention mechanism is chosen by registry name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dt_attn.attention.base import build_attention
from dt_attn.checks import check_positive_int
from dt_attn.ops.dropout import Dropout

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


@dataclass
class TransformerConfig:
    """Shape of the block stack and the attention mechanism (registry name + its options)."""

    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    dropout: float = 0.1  # of the residual branches (GPT-2's resid_pdrop)
    attention_dropout: float = 0.0  # of the attention probabilities (GPT-2's attn_pdrop), softmax only
    mlp_ratio: int = 4
    activation: str = "relu"  # the MLP's nonlinearity: "relu" (the DT paper's code) or "gelu"
    attention: str = "softmax"
    attention_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "n_layers", "n_heads", "mlp_ratio"):
            check_positive_int(name, getattr(self, name))
        if self.embed_dim % self.n_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by n_heads={self.n_heads}; "
                f"pick n_heads that divides embed_dim"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.embed_dim // cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.embed_dim)
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.attn = build_attention(cfg.attention, **cfg.attention_options)
        if cfg.attention_dropout > 0 and not self.attn.drops_probabilities:
            raise ValueError(f"attention_dropout={cfg.attention_dropout:g}: {cfg.attention} does not drop "
                             "out attention probabilities (softmax does); set attention_dropout to 0")
        self.attn.attention_dropout = cfg.attention_dropout
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.ln2 = nn.LayerNorm(cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim),
            ACTIVATIONS[cfg.activation](),
            nn.Linear(cfg.mlp_ratio * cfg.embed_dim, cfg.embed_dim),
        )
        self.drop = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, keep: slice | None = None
    ) -> torch.Tensor:
        """(B, T, E) -> (B, T, E), causal over T; with ``keep``, only the outputs x[:, keep].

        Every token still enters the attention as a key and value; ``keep`` skips the projection
        and MLP of the outputs nobody reads.
        """
        q, k, v = self._qkv(x)
        return self._residuals(x, self._attend(q, k, v, pad_mask), keep)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                pad_mask: torch.Tensor | None) -> torch.Tensor:
        """The attention's parallel form, in float32 also under autocast (its output re-enters autocast at
        the projection): the linear mechanisms' running sums and normalizers keep their precision, and
        softmax's fused CPU SDPA ran 2.3x slower in bfloat16 than in float32 at the DT training shape
        (bench_results/sdpa_precision)."""
        device = q.device.type
        if not torch.is_autocast_enabled(device):
            return self.attn(q, k, v, pad_mask=pad_mask)
        with torch.autocast(device, enabled=False):
            return self.attn(q.float(), k.float(), v.float(), pad_mask=pad_mask)

    def step(self, x: torch.Tensor, state: Any, last_only: bool = False) -> tuple[torch.Tensor, Any]:
        """n new tokens (B, n, E) -> (B, n, E) with the attention's incremental state; (B, 1, E), the
        last token's output alone, when ``last_only``.

        Everything but the attention is per token, so the n tokens share one pass through the
        linear layers; the attention consumes them in order (``Attention.step_many``). All n keys
        and values enter the state either way; ``last_only`` skips the projection and MLP of the
        outputs nobody reads.
        """
        q, k, v = self._qkv(x)
        a, state = self.attn.step_many(q, k, v, state)
        return self._residuals(x, a, slice(-1, None) if last_only else None), state

    def _qkv_of_last(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last token's q (B, H, 1, Dh) and every token's k, v (B, H, T, Dh): the projections that an
        attention reading only the last query needs."""
        B, T, E = x.shape
        h = self.ln1(x)
        w, b = self.qkv.weight, self.qkv.bias
        H, D = self.n_heads, self.head_dim
        q = nn.functional.linear(h[:, -1:], w[:E], b[:E]).view(B, 1, H, D).transpose(1, 2)
        kv = nn.functional.linear(h, w[E:], b[E:]).view(B, T, 2, H, D).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> q, k, v stacked as (3, B, H, T, Dh)."""
        B, T, _ = x.shape
        return self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _residuals(self, x: torch.Tensor, a: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """x plus the projected attention output a (B, H, T, Dh), then plus the MLP; only for the
        tokens ``keep`` selects (all when None)."""
        if keep is not None:
            x, a = x[:, keep], a[:, :, keep]
        B, T, E = x.shape
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, E)))
        return x + self.drop(self.mlp(self.ln2(x)))


class CausalTransformer(nn.Module):
    """A stack of pre-LayerNorm causal blocks plus a final LayerNorm, with a step-by-step form."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.embed_dim)
        self.apply(_init_weights)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, keep: slice | None = None
    ) -> torch.Tensor:
        """(B, T, E) -> (B, T, E); ``pad_mask`` (B, T) True marks padded positions.

        ``keep`` (a slice of the token axis) returns only the outputs x[:, keep]; the final block
        then skips the projection and MLP of the other tokens, which a caller that reads a
        subset (a Decision Transformer reads its state tokens) never needs.
        """
        if x.dim() != 3 or x.shape[-1] != self.cfg.embed_dim:
            raise ValueError(f"expected x of shape (batch, tokens, {self.cfg.embed_dim}), got "
                             f"{tuple(x.shape)}")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, pad_mask, keep=keep if i == last else None)
        return self.ln_f(x)

    def input_projections(self, x: torch.Tensor) -> torch.Tensor:
        """The first block's q, k, v of tokens x (B, T, E), stacked as (3, B, H, T, Dh). Each token's own
        projections: they do not depend on the other tokens or on where the sequence starts."""
        return self.blocks[0]._qkv(x)

    def forward_last(self, x: torch.Tensor, first_qkv: torch.Tensor | None = None) -> torch.Tensor:
        """The output at the last token of x (B, T, E) alone, (B, E): ``forward(x)[:, -1]``.

        ``first_qkv`` may hold ``input_projections(x)``, so that a caller sliding a window over a stream
        projects each token once. Every attention output of the lower blocks is recomputed (it depends
        on where the sequence starts); the top block attends from the last token alone (and projects only its
        query where the attention reads no other, ``Attention.last_query_only``).
        """
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == 0 and first_qkv is not None:
                q, k, v = first_qkv
            elif i == last and block.attn.last_query_only:
                q, k, v = block._qkv_of_last(x)
            else:
                q, k, v = block._qkv(x)
            if i < last:
                x = block._residuals(x, block.attn(q, k, v))
            else:
                x = block._residuals(x, block.attn.forward_last(q, k, v), slice(-1, None))
        return self.ln_f(x[:, -1])

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> list:
        """Empty incremental state, one entry per layer."""
        return [
            b.attn.init_state(batch, b.n_heads, b.head_dim, b.head_dim, device=device, dtype=dtype)
            for b in self.blocks
        ]

    def step(self, x_t: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """Consume one token per sequence, x_t (B, E) -> (B, E), equal to ``forward`` on the prefix."""
        out, state = self.step_many(x_t.unsqueeze(1), state)
        return out.squeeze(1), state

    def step_many(self, x: torch.Tensor, state: list, last_only: bool = False) -> tuple[torch.Tensor, list]:
        """Consume n tokens per sequence at once, x (B, n, E) -> (B, n, E); equal to n calls to ``step``.
        With ``last_only`` the output is the last token's alone, (B, 1, E), and the final block skips
        the others' projection and MLP (a rollout reads only the newest state token)."""
        if len(state) != len(self.blocks):
            raise ValueError(
                f"state has {len(state)} layer entries but the model has {len(self.blocks)} layers; "
                f"build it with init_state"
            )
        if x.dim() != 3 or x.shape[-1] != self.cfg.embed_dim:
            raise ValueError(f"expected x of shape (batch, new tokens, {self.cfg.embed_dim}), got "
                             f"{tuple(x.shape)}")
        new_state = []
        last = len(self.blocks) - 1
        for i, (block, s) in enumerate(zip(self.blocks, state)):
            x, s = block.step(x, s, last_only=last_only and i == last)
            new_state.append(s)
        return self.ln_f(x), new_state


def _init_weights(module: nn.Module) -> None:
    # GPT-2 / nanoGPT initialisation.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
