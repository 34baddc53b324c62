"""The token-mixer interfaces, the capabilities every mechanism declares, and the one registry of them.

A block of the stack is a *token mixer* plus a *channel mixer* (``dt_attn.channel``). Token mixers are of
two kinds, each mechanism's ``capabilities.kind``:

* ``"qkv"`` (``Attention``): attention over the q, k, v the block projects (softmax, cosFormer, Combiner,
  AFT, N-gram). The shapes below are theirs.
* ``"hidden"`` (``HiddenMixer``): a mixer of the block's (normalised) hidden states (B, T, E) that owns its
  projections (gMLP's spatial gating unit, R-Transformer's local RNN and attention).

Each mechanism declares what the stack needs to know (``Capabilities``: a sliding ``window`` option, the
options that set its structural lengths, dependence on absolute position, its rollout state and costs) and
its options with their defaults (``OPTIONS``); nothing reads constructor signatures.

The ``"qkv"`` interface:

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

#: the two kinds of token mixer
KINDS = ("qkv", "hidden")


@dataclass(frozen=True)
class Capabilities:
    """What a token mixer supports, declared by the mechanism (the stack, the rollouts, the tests and the
    benchmarks read this, never the mechanism's name or its constructor)."""

    kind: str  # "qkv" (attention over projected q, k, v) or "hidden" (a mixer of hidden states)
    #: takes the option ``window`` (int or None): a query sees only its last ``window`` tokens, in both
    #: forms; None sees all. The streaming rollout sets it.
    window: bool = False
    #: options that set a structural length (Combiner's span, cosFormer's chunk, N-gram's n, a local
    #: window): the property tests vary them, the lengths they run over are and are not multiples of them
    sizes: tuple[str, ...] = ()
    #: an option that must reach the longest distance attended (cosFormer's max_distance), or None
    distance: str | None = None
    #: weights differ per channel (AFT): q, k and v share one width, and there is no (T x T) weights matrix
    elementwise: bool = False
    #: whether an output depends on the absolute position of the tokens, not only on their order and
    #: distances (Combiner's block boundaries)
    absolute_position: bool = False
    #: the parallel form's cost over T tokens, in words
    training_cost: str = ""
    #: the parallel form drops out attention probabilities in training, at the block's ``attention_dropout``
    #: (softmax's); a block refuses a dropout above 0 for a mechanism that does not declare it
    drops_probabilities: bool = False
    #: the incremental state, in words
    state: str = ""
    #: the cost of one incremental step at position t, in words
    step_cost: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


class TokenMixer(nn.Module):
    """What every token mixer has: its registry name, declared capabilities and options."""

    #: registry name, set by ``register``
    name: str = ""
    capabilities: ClassVar[Capabilities]
    #: option name -> default; ``build_attention`` accepts exactly these
    OPTIONS: ClassVar[dict[str, Any]] = {}

    @classmethod
    def context_options(cls, tokens: int) -> dict[str, Any]:
        """Options a model trained on segments of ``tokens`` tokens fixes when they are not given, so that
        its incremental form computes the trained function (Combiner's span); none by default."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options().items())

    def options(self) -> dict[str, Any]:
        """The options this instance was built with (for logs and configs)."""
        return dict(getattr(self, "_options", {}))


class Attention(TokenMixer):
    """Base class: a causal attention over projected q, k, v with a parallel and an incremental form."""

    #: whether ``forward_last`` reads only the last query (the others may be left out)
    last_query_only: bool = False
    #: the probability of dropping an attention probability in training, set by the block where the
    #: mechanism declares ``Capabilities.drops_probabilities``
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

    def reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The explicit O(T^2) form of ``forward`` (``dt_attn.ops.reference``), the oracle of the fast
        forms: by default ``weights(q, k) @ v``."""
        return self.weights(q, k, pad_mask) @ v

    def weights(self, q: torch.Tensor, k: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, H, T, T) attention weights of this mechanism (``dt_attn.ops.reference``): row i is where
        query i looks. Mechanisms whose weights differ per channel have none (ValueError)."""
        raise ValueError(f"{self.name} has no (tokens x tokens) attention weights: its weights differ per "
                         "channel")

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


class HiddenMixer(TokenMixer):
    """Base class: a causal mixer of a block's normalised hidden states h (B, T, E) -> (B, T, E), the update
    the block adds to its residual stream. Built with the stack's width and heads (``build_token_mixer``).

    ``step_many(h, state)`` takes n new tokens (B, n, E) and equals ``forward`` on the prefix; n = 0 and
    B = 0 give empty outputs. ``residual_projections`` names the layers writing into the residual stream
    (the stack scales their initial weights)."""

    def __init__(self, embed_dim: int, n_heads: int) -> None:
        super().__init__()
        self.embed_dim, self.n_heads = embed_dim, n_heads

    def forward(self, h: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Parallel causal form, (B, T, E) -> (B, T, E); padded tokens (pad_mask True) influence no other."""
        raise NotImplementedError

    def reference(self, h: torch.Tensor) -> torch.Tensor:
        """The explicit form of ``forward`` (``dt_attn.ops.reference``), the oracle of the fast one."""
        raise NotImplementedError

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Any:
        """Empty incremental state for a fresh sequence."""
        raise NotImplementedError

    def step_many(self, h: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Consume n new tokens (B, n, E); returns their outputs (B, n, E) and the new state."""
        raise NotImplementedError

    def residual_projections(self) -> list[nn.Linear]:
        """The linear layers whose outputs enter the residual stream."""
        raise NotImplementedError


def attend_float32(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   pad_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The attention's parallel form, in float32 also under autocast (its output re-enters autocast at the
    next projection): the linear mechanisms' running sums and normalizers keep their precision, and
    softmax's fused CPU SDPA ran 2.3x slower in bfloat16 than in float32 at the DT training shape."""
    device = q.device.type
    if not torch.is_autocast_enabled(device):
        return attn(q, k, v, pad_mask=pad_mask)
    with torch.autocast(device, enabled=False):
        return attn(q.float(), k.float(), v.float(), pad_mask=pad_mask)


_REGISTRY: dict[str, type[TokenMixer]] = {}


def register(name: str) -> Callable[[type[TokenMixer]], type[TokenMixer]]:
    """Class decorator: make a token mixer buildable by name (``build_attention``, ``build_token_mixer``).
    The class must declare ``capabilities`` of the kind its base class has."""

    def deco(cls: type[TokenMixer]) -> type[TokenMixer]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is registered twice")
        caps = cls.__dict__.get("capabilities")
        if not isinstance(caps, Capabilities):
            raise TypeError(f"{name}: declare what it supports as a class attribute capabilities = "
                             "Capabilities(kind=..., ...)")
        named = [*caps.sizes, *([caps.distance] if caps.distance else []),
                 *(["window"] if caps.window else [])]
        undeclared = [option for option in named if option not in cls.OPTIONS]
        if undeclared:
            raise ValueError(f"{name}: its capabilities name option(s) {undeclared} that OPTIONS does not "
                             "declare")
        want = "hidden" if issubclass(cls, HiddenMixer) else "qkv"
        if caps.kind != want:
            raise ValueError(f"{name}: capabilities.kind is {caps.kind!r} but the class is a "
                             f"{'HiddenMixer' if want == 'hidden' else 'Attention'} ({want!r})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_attentions(kind: str | None = None) -> list[str]:
    """Sorted names of every registered token mixer, or of those of one ``kind`` ("qkv", "hidden")."""
    _load_builtin()
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    return sorted(n for n, cls in _REGISTRY.items() if kind is None or cls.capabilities.kind == kind)


def attention_options(name: str) -> dict[str, Any]:
    """Option names of one mechanism with their defaults (as it declares them)."""
    _load_builtin()
    return dict(_lookup(name).OPTIONS)


def capabilities(name: str) -> Capabilities:
    """What the mechanism ``name`` declares it supports."""
    _load_builtin()
    return _lookup(name).capabilities


def context_options(name: str, options: dict[str, Any], tokens: int) -> dict[str, Any]:
    """``options`` plus the ones a model trained on ``tokens``-token segments fixes (``context_options`` of
    the mechanism) where they are not given."""
    _load_builtin()
    return {**_lookup(name).context_options(tokens), **options}


def build_attention(name: str, **options: Any) -> Attention:
    """Build a registered attention over q, k, v from its name and options; bad names/options raise
    ValueError."""
    _load_builtin()
    cls = _lookup(name)
    if cls.capabilities.kind != "qkv":
        raise ValueError(f"{name} mixes hidden states, not q, k, v: build it with build_token_mixer(name, "
                         "embed_dim, n_heads, **options)")
    return _build(cls, (), options)  # type: ignore[return-value]


def build_token_mixer(name: str, embed_dim: int, n_heads: int, **options: Any) -> TokenMixer:
    """Build any registered token mixer: an ``Attention`` (which needs no widths) or a ``HiddenMixer`` of
    width ``embed_dim`` with ``n_heads`` heads."""
    _load_builtin()
    cls = _lookup(name)
    dims = (embed_dim, n_heads) if cls.capabilities.kind == "hidden" else ()
    return _build(cls, dims, options)


def attention_weights(name: str, q: torch.Tensor, k: torch.Tensor, pad_mask: torch.Tensor | None = None,
                      **options: Any) -> torch.Tensor:
    """The (B, H, T, T) attention weights of mechanism ``name`` built with ``options`` (its explicit
    form in ``dt_attn.ops.reference``)."""
    return build_attention(name, **options).weights(q, k, pad_mask)


def reference_attention(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        pad_mask: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
    """The output (B, H, T, Dv) of mechanism ``name`` computed by its explicit O(T^2) form."""
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected v (B, H, T, Dv) matching q {tuple(q.shape)}, got {tuple(v.shape)}")
    return build_attention(name, **options).reference(q, k, v, pad_mask)


def _build(cls: type[TokenMixer], dims: tuple, options: dict[str, Any]) -> TokenMixer:
    valid = cls.OPTIONS
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"attention {cls.name!r} got unknown option(s) {unknown}; valid options: "
            + (", ".join(f"{k} (default {v!r})" for k, v in valid.items()) or "none")
        )
    module = cls(*dims, **options)
    module._options = {**valid, **options}
    return module


def _lookup(name: str) -> type[TokenMixer]:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown attention {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _load_builtin() -> None:
    # Importing the mechanism modules registers them.
    from dt_attn.attention import aft, combiner, cosformer, gmlp, ngram, rtransformer, softmax  # noqa: F401
