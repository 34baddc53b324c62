"""The Decision Transformer (Chen et al. 2021) on top of the swappable-attention block stack.

Per timestep three tokens (return-to-go, state, action), each a linear embedding plus a
learned timestep embedding, then LayerNorm, the ``dt_attn`` causal stack, and a tanh head
that predicts a_t from the output at the state token of step t.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents.config import TOKENS_PER_STEP
from dt_attn import CausalTransformer, TransformerConfig, context_options
from dt_attn.ops.dropout import Dropout
from dt_attn.transformer import WindowState

# Actions are read from the state tokens, the second of each timestep's (return-to-go, state, action).
STATE_TOKENS = slice(1, None, TOKENS_PER_STEP)


@dataclass
class DTConfig:
    """Shape of a Decision Transformer: its inputs, context and episode length, its initialization, and the
    block stack it runs (``transformer``: width, depth, heads, dropout, MLP, attention and its options)."""

    state_dim: int
    act_dim: int
    context: int = 20
    max_ep_len: int = 1000
    # "normal": the peers' scheme (see DecisionTransformer.init_weights); "torch-default"
    init: str = "normal"
    init_std: float = 0.02  # standard deviation of every weight drawn by the "normal" scheme
    # dropout of the token embeddings before the block stack, in training (GPT-2's embd_pdrop)
    embed_dropout: float = 0.0
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DTConfig:
        """The config ``dataclasses.asdict`` saved (a checkpoint's ``model_config`` of the current format)."""
        return cls(**{**values, "transformer": TransformerConfig(**values["transformer"])})


def attention_options_for(attention: str, options: dict[str, Any], context: int) -> dict[str, Any]:
    """The options a Decision Transformer of context K builds ``attention`` with: ``options``, plus those the
    mechanism fixes for segments of 3K tokens where they are not given (``dt_attn.context_options``:
    Combiner's span ceil(sqrt(3K))), so that its incremental form computes the trained function."""
    return context_options(attention, options, TOKENS_PER_STEP * context)


def window_tokens(context: int) -> int:
    """Tokens of a K-step segment as its last state token sees them, R_{t-K+1} .. s_t: 3K - 1."""
    return TOKENS_PER_STEP * context - 1


#: Weight initialization schemes; "torch-default" keeps PyTorch's own layer defaults for the embeddings and
#: the action head (an N(0, 1) timestep embedding), as runs saved before the peers' scheme was adopted used.
INIT_SCHEMES = ("normal", "torch-default")


def _left_pad_lengths(pad_mask: torch.Tensor) -> torch.Tensor:
    """Number of leading padded steps per row; rejects masks that are not left padding."""
    pads = pad_mask.sum(dim=1)
    expected = torch.arange(pad_mask.shape[1], device=pad_mask.device)[None, :] < pads[:, None]
    if not torch.equal(expected, pad_mask):
        raise ValueError("pad_mask must mark left padding (True for a prefix of each row, then False)")
    return pads


def _last_state_token(k: int, pad_steps: int) -> slice:
    """The state token of the last real step of a K-step segment whose padding was rolled to its end."""
    last = TOKENS_PER_STEP * (k - pad_steps) - 2
    return slice(last, last + 1)


class DecisionTransformer(nn.Module):
    """Return-conditioned policy: (R, s, a) tokens in, a_t predicted from the state token."""

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e = cfg.transformer.embed_dim
        self.embed_timestep = nn.Embedding(cfg.max_ep_len, e)
        self.embed_return = nn.Linear(1, e)
        self.embed_state = nn.Linear(cfg.state_dim, e)
        self.embed_action = nn.Linear(cfg.act_dim, e)
        self.embed_ln = nn.LayerNorm(e)
        self.embed_drop = Dropout(cfg.embed_dropout)  # validates the probability
        self.transformer = CausalTransformer(cfg.transformer)
        self.predict_action = nn.Sequential(nn.Linear(e, cfg.act_dim), nn.Tanh())
        if cfg.init == "normal":
            self.init_weights(cfg.init_std)
        elif cfg.init != "torch-default":
            raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {cfg.init!r}")

    def init_weights(self, std: float) -> None:
        """GPT-2's initialization, as HuggingFace's DecisionTransformerModel, CORL and d3rlpy use it:
        every linear and embedding weight ~ N(0, std), biases 0, LayerNorm weight 1 and bias 0, and the
        two residual output projections of each block (attention ``proj`` and the MLP's second layer)
        ~ N(0, std / sqrt(2 n_layers)), so the residual stream's variance does not grow with depth.

        PyTorch's default N(0, 1) for the timestep embedding instead adds a term 50x larger than every
        other token embedding at small budgets, which the model must first learn to shrink."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        residual_std = std / (2 * self.cfg.transformer.n_layers) ** 0.5
        for block in self.transformer.blocks:
            for layer in block.residual_projections():
                nn.init.normal_(layer.weight, mean=0.0, std=residual_std)

    # ----------------------------------------------------------------- tokens
    def _time(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.embed_timestep(timesteps.clamp(0, self.cfg.max_ep_len - 1))

    def embed_tokens(
        self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """(B,K,1), (B,K,S), (B,K,A), (B,K) -> interleaved token embeddings (B,3K,E)."""
        t = self._time(timesteps)
        toks = torch.stack(
            (self.embed_return(rtg) + t, self.embed_state(states) + t, self.embed_action(actions) + t), dim=2
        )
        b, k = states.shape[:2]
        return self.embed_ln(toks.reshape(b, TOKENS_PER_STEP * k, -1))

    def _step_tokens(
        self, rtg: torch.Tensor, obs: torch.Tensor, timestep: torch.Tensor, prev_action: torch.Tensor | None
    ) -> torch.Tensor:
        """The tokens one rollout step adds, embedded: a_{t-1} (when given), R_t, s_t -> (B, 2 or 3, E)."""
        t = self._time(timestep)
        tokens = [self.embed_return(rtg) + t, self.embed_state(obs) + t]
        if prev_action is not None:
            tokens.insert(0, self.embed_action(prev_action) + self._time(timestep - 1))
        return self.embed_ln(torch.stack(tokens, dim=1))

    # --------------------------------------------------------------- parallel
    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        rtg: torch.Tensor,
        timesteps: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Predicted actions (B,K,A) for every step of left-padded segments (pad_mask True = padding);
        with ``last_only``, for the last step alone (B,1,A), as a rollout that re-runs the window reads.
        In training the token embeddings are dropped out (``embed_dropout``); the rollouts run in eval mode,
        where nothing is."""
        x = self.embed_drop(self.embed_tokens(rtg, states, actions, timesteps))
        k = states.shape[1]
        if pad_mask is None:
            keep = _last_state_token(k, 0) if last_only else STATE_TOKENS
            return self.predict_action(self.transformer(x, keep=keep))
        # Roll each row so its first real token sits at position 0, as in a rollout that
        # starts at the episode start: position-dependent mechanisms (Combiner's regions,
        # cosFormer's phases) then see identical positions in training and evaluation.
        # Padding moves to the end, after every real token, so causal attention alone keeps
        # it out of real outputs: no key-padding mask is needed, which keeps softmax on the
        # fused is_causal kernel. Outputs at padded steps are finite and ignored by the loss.
        # The roll moves whole (R, s, a) triples, so state tokens stay at positions 1::3.
        pad_steps = _left_pad_lengths(pad_mask)
        n = x.shape[1]
        idx = (torch.arange(n, device=x.device)[None, :] + TOKENS_PER_STEP * pad_steps[:, None]) % n
        x = torch.gather(x, 1, idx[:, :, None].expand_as(x))
        if last_only and bool((pad_steps == pad_steps[0]).all()):  # one shared position of the last step
            return self.predict_action(self.transformer(x, keep=_last_state_token(k, int(pad_steps[0]))))
        # After the roll, the last 3 * (least padding) tokens are padding in every row; causal
        # attention means they change no real output, so the stack skips them. Long-context
        # segments are mostly padding (hopper's K=1000 segments hold about 110 real steps on
        # average), so this saves most of their step time. Steps padded in every row output zeros.
        real = k - int(pad_steps.min())
        h = self.transformer(x[:, : TOKENS_PER_STEP * real], keep=STATE_TOKENS)
        h = F.pad(h, (0, 0, 0, k - real))
        back = (torch.arange(k, device=x.device)[None, :] - pad_steps[:, None]) % k
        h = torch.gather(h, 1, back[:, :, None].expand_as(h))
        return self.predict_action(h[:, -1:] if last_only else h)

    def aux_loss(self) -> torch.Tensor | None:
        """The auxiliary training loss of the last forward pass (the experts' weighted load-balancing loss;
        None without a mixture of experts)."""
        return self.transformer.aux_loss()

    def tokens_per_expert(self) -> list[torch.Tensor]:
        """Per mixture-of-experts layer, the (token, choice) pairs each expert received in the last pass."""
        return self.transformer.tokens_per_expert()

    # ------------------------------------------------------------ incremental (streaming)
    def init_state(self, batch: int, device: torch.device | str | None = None) -> list:
        """Fresh rollout state for ``batch`` episodes starting now."""
        dtype = next(self.parameters()).dtype
        return self.transformer.init_state(batch, device=device, dtype=dtype)

    def act(
        self,
        state: list,
        rtg: torch.Tensor,
        obs: torch.Tensor,
        timestep: torch.Tensor,
        prev_action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list]:
        """One rollout step in one pass through the stack: feed a_{t-1} (B,A) when given (every step
        but the first), then R_t (B,1) and s_t (B,S) at ``timestep`` t (B,); return a_t (B,A)."""
        h, state = self.transformer.step_many(self._step_tokens(rtg, obs, timestep, prev_action), state,
                                              last_only=True)
        return self.predict_action(h[:, -1]), state

    # ------------------------------------------------------------ exact re-run
    def init_exact_state(self, batch: int, device: torch.device | str | None = None) -> WindowState:
        """Empty state of the exact rollout (``act_exact``) for ``batch`` episodes starting now."""
        dtype = next(self.parameters()).dtype
        size = window_tokens(self.cfg.context)
        return self.transformer.init_window(batch, size, device=device, dtype=dtype)

    def act_exact(
        self,
        state: WindowState,
        rtg: torch.Tensor,
        obs: torch.Tensor,
        timestep: torch.Tensor,
        prev_action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, WindowState]:
        """One rollout step of the function that was trained: a_t (B,A) from the last K steps
        R_{t-K+1}, s_{t-K+1}, a_{t-K+1}, ..., R_t, s_t, as ``forward(..., last_only=True)`` on that
        segment computes it. Arguments as in ``act``.

        Only what does not depend on where the window starts is kept from earlier steps (each token's
        embedding and its first-block projections, ``CausalTransformer.window_step``); every token mixer's
        output is recomputed, the top block's for s_t alone.
        """
        x = self._step_tokens(rtg, obs, timestep, prev_action)
        h, state = self.transformer.window_step(x, state, window_tokens(self.cfg.context))
        return self.predict_action(h), state

    def with_attention_options(self, **options: Any) -> DecisionTransformer:
        """A copy sharing no state whose attention is rebuilt with extra options (e.g. a window)."""
        cfg = copy.deepcopy(self.cfg)
        cfg.transformer.attention_options = {**cfg.transformer.attention_options, **options}
        clone = DecisionTransformer(cfg).to(next(self.parameters()).device)
        clone.load_state_dict(self.state_dict())
        clone.train(self.training)
        return clone


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
