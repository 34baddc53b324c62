"""A causal GPT-style transformer stack: each block a token mixer chosen by registry name plus a channel
mixer (the MLP or a mixture of experts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dt_attn.attention.base import attend_float32, build_token_mixer, capabilities
from dt_attn.channel import ACTIVATIONS, MixtureOfExperts, build_channel_mixer, output_layers, parse_mlp
from dt_attn.checks import check_positive_int
from dt_attn.ops.dropout import Dropout

__all__ = ["ACTIVATIONS", "Block", "CausalTransformer", "TransformerConfig", "WindowState"]


@dataclass
class TransformerConfig:
    """Shape of the block stack, its token mixer (registry name + its options) and its channel mixer."""

    embed_dim: int = 128
    n_layers: int = 3
    n_heads: int = 1
    dropout: float = 0.1  # of the residual branches (GPT-2's resid_pdrop)
    attention_dropout: float = 0.0  # of the attention probabilities (GPT-2's attn_pdrop), softmax only
    mlp_ratio: int = 4
    activation: str = "relu"  # the MLP's nonlinearity: "relu" (the DT paper's code) or "gelu"
    attention: str = "softmax"
    attention_options: dict[str, Any] = field(default_factory=dict)
    mlp: str = "mlp"  # the channel mixer: "mlp" or "moe:EXPERTS:TOP_K" (dt_attn.channel)
    moe_aux_weight: float = 0.01  # weight of the experts' load-balancing loss in ``aux_loss``

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
        parse_mlp(self.mlp)
        if not 0.0 <= self.moe_aux_weight < float("inf"):
            raise ValueError(f"moe_aux_weight must be >= 0 and finite, got {self.moe_aux_weight!r}")


class Block(nn.Module):
    """Pre-LayerNorm block: x + mix(ln1(x)), then x + mlp(ln2(x)).

    The token mixer is attention over q, k, v (``ln1 -> qkv -> attn -> proj``) or, for a mechanism of kind
    "hidden", a mixer of ln1(x) that owns its projections (``mixer``); the block reads which from the
    mechanism's declared capabilities."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.embed_dim // cfg.n_heads
        self.over_qkv = capabilities(cfg.attention).kind == "qkv"
        self.ln1 = nn.LayerNorm(cfg.embed_dim)
        mixer = build_token_mixer(cfg.attention, cfg.embed_dim, cfg.n_heads, **cfg.attention_options)
        if cfg.attention_dropout > 0 and not capabilities(cfg.attention).drops_probabilities:
            raise ValueError(f"attention_dropout={cfg.attention_dropout:g}: {cfg.attention} does not drop "
                             "out attention probabilities (softmax does); set attention_dropout to 0")
        if self.over_qkv:
            self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
            self.attn = mixer
            self.attn.attention_dropout = cfg.attention_dropout
            self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        else:
            self.mixer = mixer
        self.ln2 = nn.LayerNorm(cfg.embed_dim)
        self.mlp = build_channel_mixer(cfg.mlp, cfg.embed_dim, cfg.mlp_ratio * cfg.embed_dim, cfg.activation)
        self.drop = Dropout(cfg.dropout)

    def residual_projections(self) -> list[nn.Linear]:
        """The linear layers whose outputs enter the residual stream (scaled at initialisation)."""
        mixing = [self.proj] if self.over_qkv else self.mixer.residual_projections()
        return mixing + output_layers(self.mlp)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, keep: slice | None = None
    ) -> torch.Tensor:
        """(B, T, E) -> (B, T, E), causal over T; with ``keep``, only the outputs x[:, keep].

        Every token still enters the token mixer; ``keep`` skips the projection and MLP of the outputs
        nobody reads.
        """
        if not self.over_qkv:
            return self._channel(x, self.mixer(self.ln1(x), pad_mask), keep)
        q, k, v = self._qkv(x)
        return self._residuals(x, attend_float32(self.attn, q, k, v, pad_mask), keep)

    def step(self, x: torch.Tensor, state: Any, last_only: bool = False) -> tuple[torch.Tensor, Any]:
        """n new tokens (B, n, E) -> (B, n, E) with the token mixer's incremental state; (B, 1, E), the
        last token's output alone, when ``last_only``.

        Everything but the token mixer is per token, so the n tokens share one pass through the
        linear layers; the mixer consumes them in order (``step_many``). All n tokens enter the state
        either way; ``last_only`` skips the projection and MLP of the outputs nobody reads.
        """
        keep = slice(-1, None) if last_only else None
        if not self.over_qkv:
            update, state = self.mixer.step_many(self.ln1(x), state)
            return self._channel(x, update, keep), state
        q, k, v = self._qkv(x)
        a, state = self.attn.step_many(q, k, v, state)
        return self._residuals(x, a, keep), state

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Any:
        """The token mixer's empty incremental state."""
        if not self.over_qkv:
            return self.mixer.init_state(batch, device=device, dtype=dtype)
        return self.attn.init_state(batch, self.n_heads, self.head_dim, self.head_dim, device=device,
                                    dtype=dtype)

    @property
    def projection_width(self) -> int | None:
        """The width F of ``token_projections`` (None where there are none)."""
        return self.qkv.out_features if self.over_qkv else None

    def token_projections(self, x: torch.Tensor) -> torch.Tensor | None:
        """What the block computes of each token alone, before any mixing, (B, T, F): the q, k, v
        projections of an attention block (independent of the other tokens and of where the sequence
        starts, so a sliding window may keep them); None for a hidden-state mixer."""
        return self.qkv(self.ln1(x)) if self.over_qkv else None

    def forward_last(self, x: torch.Tensor, projected: torch.Tensor | None = None,
                     top: bool = False) -> torch.Tensor:
        """The block over x (B, T, E) as ``forward``, reusing ``projected`` (``token_projections(x)``) where
        given; ``top``: the last token's output alone (B, 1, E), attending from it alone (and projecting
        only its query where the attention reads no other, ``Attention.last_query_only``)."""
        keep = slice(-1, None) if top else None
        if not self.over_qkv:
            return self.forward(x, keep=keep)
        if projected is not None:
            q, k, v = self._split_heads(projected)
        elif top and self.attn.last_query_only:
            q, k, v = self._qkv_of_last(x)
        else:
            q, k, v = self._qkv(x)
        if not top:
            return self._residuals(x, self.attn(q, k, v))
        return self._residuals(x, self.attn.forward_last(q, k, v), keep)

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
        return self._split_heads(self.qkv(self.ln1(x)))

    def _split_heads(self, projected: torch.Tensor) -> torch.Tensor:
        """(B, T, 3E) -> q, k, v stacked as (3, B, H, T, Dh)."""
        B, T, _ = projected.shape
        return projected.view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _residuals(self, x: torch.Tensor, a: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """x plus the projected attention output a (B, H, T, Dh), then plus the MLP; only for the
        tokens ``keep`` selects (all when None)."""
        if keep is not None:
            x, a = x[:, keep], a[:, :, keep]
        B, T, E = x.shape
        return self._channel(x, self.proj(a.transpose(1, 2).reshape(B, T, E)))

    def _channel(self, x: torch.Tensor, update: torch.Tensor, keep: slice | None = None) -> torch.Tensor:
        """x plus the token mixer's ``update`` (B, T, E), then plus the channel mixer; only for ``keep``."""
        if keep is not None:
            x, update = x[:, keep], update[:, keep]
        x = x + self.drop(update)
        return x + self.drop(self.mlp(self.ln2(x)))


@dataclass
class WindowState:
    """A sliding window over a token stream (``CausalTransformer.window_step``): the latest tokens and the
    first block's ``token_projections`` of them in a ring of C slots stored twice (token p in slots p mod C
    and p mod C + C), so that the last C - 1 tokens are always one contiguous slice. Allocated once, written
    in place."""

    tokens: torch.Tensor  # (B, 2C, E)
    projected: torch.Tensor | None  # (B, 2C, F), or None where the first block has none to keep
    length: int = 0  # tokens of the stream consumed so far


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

    def init_window(self, batch: int, size: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> WindowState:
        """An empty sliding window of the last ``size`` tokens (``window_step``) for ``batch`` streams."""
        width = self.blocks[0].projection_width
        slots = 2 * (size + 1)
        return WindowState(
            tokens=torch.zeros(batch, slots, self.cfg.embed_dim, device=device, dtype=dtype),
            projected=None if width is None else torch.zeros(batch, slots, width, device=device, dtype=dtype))

    def window_step(self, x: torch.Tensor, state: WindowState, size: int) -> tuple[torch.Tensor, WindowState]:
        """Append n new tokens x (B, n, E) to the window and return ``forward_last`` over the last
        ``size`` tokens of the stream (all of them while fewer), (B, E): the stack re-run on the window.

        Only what does not depend on where the window starts is kept from earlier calls: each token and its
        first-block ``token_projections``. Every token mixer's output is recomputed."""
        capacity = state.tokens.shape[1] // 2
        if size >= capacity:
            raise ValueError(f"the window state holds {capacity - 1} tokens, asked for {size}")
        slots = (state.length + torch.arange(x.shape[1], device=x.device)) % capacity
        both = torch.cat((slots, slots + capacity))  # every token twice: the window is one slice
        state.tokens.index_copy_(1, both, torch.cat((x, x), dim=1))
        projected = self.blocks[0].token_projections(x)
        if state.projected is not None:
            state.projected.index_copy_(1, both, torch.cat((projected, projected), dim=1))
        end = state.length + x.shape[1]
        n = min(end, size)
        first = (end - n) % capacity
        window = slice(first, first + n)
        cached = None if state.projected is None else state.projected[:, window]
        h = self.forward_last(state.tokens[:, window], cached)
        return h, WindowState(state.tokens, state.projected, end)

    def forward_last(self, x: torch.Tensor, first_projected: torch.Tensor | None = None) -> torch.Tensor:
        """The output at the last token of x (B, T, E) alone, (B, E): ``forward(x)[:, -1]``.

        ``first_projected`` may hold the first block's ``token_projections(x)``, so that a caller sliding a
        window over a stream projects each token once. Every token mixer's output of the lower blocks is
        recomputed (it depends on where the sequence starts); the top block mixes for the last token alone.
        """
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block.forward_last(x, first_projected if i == 0 else None, top=i == last)
        return self.ln_f(x[:, -1])

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> list:
        """Empty incremental state, one entry per layer."""
        return [b.init_state(batch, device=device, dtype=dtype) for b in self.blocks]

    def aux_loss(self) -> torch.Tensor | None:
        """The auxiliary training loss of the last forward pass: ``moe_aux_weight`` times the sum over the
        mixture-of-experts blocks of their load-balancing losses; None without experts."""
        losses = [b.mlp.balance_loss for b in self.blocks
                  if isinstance(b.mlp, MixtureOfExperts) and b.mlp.balance_loss is not None]
        return self.cfg.moe_aux_weight * torch.stack(losses).sum() if losses else None

    def tokens_per_expert(self) -> list[torch.Tensor]:
        """Per mixture-of-experts block, how many (token, choice) pairs each expert received in the last
        forward pass (for routing statistics)."""
        return [b.mlp.tokens_per_expert for b in self.blocks
                if isinstance(b.mlp, MixtureOfExperts) and b.mlp.tokens_per_expert is not None]

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
