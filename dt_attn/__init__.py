"""Token mixers (softmax, cosFormer, Combiner, AFT, N-gram, gMLP, R-Transformer) behind one registry,
channel mixers (MLP, mixture of experts), and a causal transformer."""

from dt_attn.attention.base import (
    Attention,
    Capabilities,
    HiddenMixer,
    attention_options,
    attention_weights,
    available_attentions,
    build_attention,
    build_token_mixer,
    capabilities,
    context_options,
    reference_attention,
)
from dt_attn.transformer import CausalTransformer, TransformerConfig

__all__ = [
    "Attention",
    "Capabilities",
    "CausalTransformer",
    "HiddenMixer",
    "TransformerConfig",
    "attention_options",
    "attention_weights",
    "available_attentions",
    "build_attention",
    "build_token_mixer",
    "capabilities",
    "context_options",
    "reference_attention",
]
