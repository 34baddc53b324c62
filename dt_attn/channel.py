"""Channel mixers, the per-token half of a block: the MLP, or a mixture of experts (Sparse-MLP, Lou et al.
2021; the routing and balancing loss of the Switch Transformer, Fedus et al. 2021).

Both act on each token alone, so the parallel and incremental forms of a block agree whatever its channel
mixer. ``mlp`` names one: ``"mlp"`` or ``"moe:EXPERTS:TOP_K"``.

Mixture of experts: a router (a linear map without bias) gives each token probabilities p = softmax(x R)
over the experts; the token goes to its TOP_K most probable experts and its output is
``sum_{e in top-k} p_e * expert_e(x)`` (the gates are not renormalised, so the task loss reaches the router
too). Every expert is an MLP of the dense one's shape. No capacity limit drops tokens: a capacity couples a
token's output to the other tokens of the batch, which a rollout does not have. The load-balancing loss of
a forward pass is ``EXPERTS * sum_e f_e P_e``: f_e the fraction of routed (token, choice) pairs that went to
expert e, P_e the mean probability of e over the tokens; it is 1 when routing is uniform, larger when it is
not, and its gradient reaches the router through P_e.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
#: the spelling of a mixture of experts in ``mlp``: moe:EXPERTS:TOP_K
MOE_PREFIX = "moe"


def parse_mlp(spec: str) -> tuple[int, int] | None:
    """None for ``"mlp"``; (experts, top_k) for ``"moe:EXPERTS:TOP_K"``; a ValueError saying the form
    otherwise."""
    if spec == "mlp":
        return None
    parts = spec.split(":") if isinstance(spec, str) else []
    usage = (f"mlp must be 'mlp' or 'moe:EXPERTS:TOP_K' with 1 <= TOP_K <= EXPERTS (e.g. moe:4:1), "
             f"got {spec!r}")
    if len(parts) != 3 or parts[0] != MOE_PREFIX or not all(p.isdigit() for p in parts[1:]):
        raise ValueError(usage)
    experts, top_k = int(parts[1]), int(parts[2])
    if not 1 <= top_k <= experts:
        raise ValueError(usage)
    return experts, top_k


def build_channel_mixer(spec: str, embed_dim: int, hidden: int, activation: str) -> nn.Module:
    """The channel mixer ``spec`` names (``parse_mlp``), of width ``embed_dim`` with ``hidden`` units per
    MLP."""
    moe = parse_mlp(spec)
    if moe is None:
        return dense_mlp(embed_dim, hidden, activation)
    return MixtureOfExperts(embed_dim, hidden, activation, *moe)


def dense_mlp(embed_dim: int, hidden: int, activation: str) -> nn.Sequential:
    """Linear -> activation -> Linear, the transformer's MLP."""
    return nn.Sequential(nn.Linear(embed_dim, hidden), ACTIVATIONS[activation](),
                         nn.Linear(hidden, embed_dim))


def output_layers(mixer: nn.Module) -> list[nn.Linear]:
    """The linear layers whose outputs a channel mixer adds to the residual stream."""
    if isinstance(mixer, MixtureOfExperts):
        return [expert[-1] for expert in mixer.experts]
    return [mixer[-1]]


class MixtureOfExperts(nn.Module):
    """Token-wise top-k mixture of MLP experts (module docstring). After each forward pass,
    ``balance_loss`` holds its load-balancing loss (a scalar tensor with gradient) and
    ``tokens_per_expert`` the number of (token, choice) pairs each expert received (EXPERTS,)."""

    def __init__(self, embed_dim: int, hidden: int, activation: str, experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(embed_dim, experts, bias=False)
        self.experts = nn.ModuleList(dense_mlp(embed_dim, hidden, activation) for _ in range(experts))
        self.balance_loss: torch.Tensor | None = None
        self.tokens_per_expert: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., E) -> (..., E), each token through its top-k experts."""
        flat = x.reshape(-1, x.shape[-1])
        probs = F.softmax(self.router(flat).float(), dim=-1)  # routing in float32 also under autocast
        gate, chosen = probs.topk(self.top_k, dim=-1)  # (N, k); ties go to the lower expert index
        n_experts = len(self.experts)
        counts = torch.bincount(chosen.reshape(-1), minlength=n_experts)
        out = torch.zeros_like(flat, dtype=torch.promote_types(flat.dtype, torch.float32))
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            # also an expert without tokens runs (on none), so that every parameter gets a (zero) gradient, as
            # DistributedDataParallel requires of each step
            out.index_add_(0, rows, (gate[rows, slot, None] * expert(flat[rows])).to(out.dtype))
        self.tokens_per_expert = counts.detach()
        self.balance_loss = self._balance(probs, counts)
        return out.to(x.dtype).reshape(x.shape)

    def _balance(self, probs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """EXPERTS * sum_e f_e P_e over this pass's tokens (0 without tokens)."""
        if probs.shape[0] == 0:
            return probs.sum()
        share = counts.to(probs.dtype) / counts.sum()
        return len(self.experts) * (share * probs.mean(0)).sum()
