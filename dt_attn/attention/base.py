"""The one attention interface every mechanism implements, and the registry that builds them.

Shapes (all mechanisms):
* ``q, k``: (batch, heads, tokens, head_dim); ``v``: (batch, heads, tokens, value_dim).
* ``pad_mask``: optional (batch, tokens) bool, **True marks a padded position**. Padded keys
  contribute nothing to any output; padded queries still give finite outputs.
* ``step`` takes one token: q, k (batch, heads, head_dim), v (batch, heads, value_dim), and returns
  (out (batch, heads, value_dim), new_state). Feeding a sequence token by token through ``step``
  reproduces ``forward`` on the same prefix (to float tolerance).
* ``step_many`` takes n consecutive tokens (batch, heads, n, dim) and equals n calls to ``step``;
  the base class loops, a mechanism may override it with a batched form. n = 0 is a no-op.
* Empty inputs are fine: batch 0, 0 tokens in the parallel form or 0 new tokens in ``step_many``
  return correctly shaped empty outputs.
* ``forward_last`` is the parallel form's output at the last token alone (batch, heads, 1, value_dim);
  the base class slices ``forward``, a mechanism may override it with a cheaper form.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class Attention(nn.Module):
    """Base class: a causal attention mechanism with a parallel and an incremental form."""

    #: registry name, set by ``register``
    name: str = ""
    #: whether ``forward_last`` reads only the last query (the others may be left out)
    last_query_only: bool = False
    #: whether the parallel form drops out attention probabilities in training, at ``attention_dropout``
    #: (set by the block); a block refuses a dropout above 0 for a mechanism that declares none
    drops_probabilities: bool = False
    attention_dropout: float = 0.0

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Parallel causal attention over all tokens; returns (batch, heads, tokens, value_dim)."""
        raise NotImplementedError

    def forward_last(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The causal output of the last token alone, (batch, heads, 1, value_dim):
        ``forward(q, k, v)[:, :, -1:]``. With ``last_query_only``, q may hold the last query alone
        (batch, heads, 1, head_dim)."""
        return self.forward(q, k, v)[:, :, -1:]

    def init_state(
        self,
        batch: int,
        heads: int,
        head_dim: int,
        value_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Any:
        """Empty incremental state for a fresh sequence (no tokens seen yet)."""
        raise NotImplementedError

    def step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        """Consume one token per sequence; returns its output and the updated state."""
        raise NotImplementedError

    def step_many(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        """Consume n consecutive tokens per sequence (q, k, v with n on dim 2); same as n ``step`` calls.

        n = 0 returns an empty (batch, heads, 0, value_dim) output and leaves the state as it was."""
        if q.shape[2] == 0:
            return v.new_empty(v.shape), state
        outs = []
        for i in range(q.shape[2]):
            out, state = self.step(q[:, :, i], k[:, :, i], v[:, :, i], state)
            outs.append(out)
        return torch.stack(outs, dim=2), state

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options().items())

    def options(self) -> dict[str, Any]:
        """The constructor options this instance was built with (for logs and configs)."""
        return dict(getattr(self, "_options", {}))


_REGISTRY: dict[str, type[Attention]] = {}


def register(name: str) -> Callable[[type[Attention]], type[Attention]]:
    """Class decorator: make an Attention subclass buildable by ``build_attention(name)``."""

    def deco(cls: type[Attention]) -> type[Attention]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_attentions() -> list[str]:
    """Sorted names of every registered attention mechanism."""
    _load_builtin()
    return sorted(_REGISTRY)


def attention_options(name: str) -> dict[str, Any]:
    """Option names of one mechanism with their defaults."""
    _load_builtin()
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in list(sig.parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_attention(name: str, **options: Any) -> Attention:
    """Build a registered mechanism from its name and options; bad names/options raise ValueError."""
    _load_builtin()
    cls = _lookup(name)
    valid = attention_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"attention {name!r} got unknown option(s) {unknown}; valid options: "
            + (", ".join(f"{k} (default {v!r})" for k, v in valid.items()) or "none")
        )
    module = cls(**options)
    module._options = {**valid, **options}
    return module


def _lookup(name: str) -> type[Attention]:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown attention {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _load_builtin() -> None:
    # Importing the mechanism modules registers them.
    from dt_attn.attention import combiner, cosformer, softmax  # noqa: F401
