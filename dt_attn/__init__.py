"""Attention mechanisms (softmax, cosFormer, Combiner) behind one interface, and a causal transformer."""

from dt_attn.attention.base import Attention, attention_options, available_attentions, build_attention
from dt_attn.ops.reference import attention_weights, reference_attention
from dt_attn.transformer import CausalTransformer, TransformerConfig

__all__ = [
    "Attention",
    "CausalTransformer",
    "TransformerConfig",
    "attention_options",
    "attention_weights",
    "available_attentions",
    "build_attention",
    "reference_attention",
]
