"""The attention registry: names, options, and clear errors for bad names and values."""

from __future__ import annotations

import pytest

from dt_attn import Attention, attention_options, available_attentions, build_attention


def test_builtin_mechanisms_are_registered():
    names = available_attentions()
    assert {"softmax", "cosformer"} <= set(names)
    assert names == sorted(names)


def test_build_returns_the_named_mechanism_with_its_options():
    attn = build_attention("cosformer", window=32, chunk_size=16)
    assert isinstance(attn, Attention)
    assert attn.name == "cosformer"
    assert attn.options() == {"max_distance": 4096, "chunk_size": 16, "window": 32, "eps": 1e-6}
    assert build_attention("softmax").options() == {"window": None}


def test_attention_options_lists_defaults():
    assert attention_options("softmax") == {"window": None}
    assert attention_options("cosformer") == {
        "max_distance": 4096,
        "chunk_size": 64,
        "window": None,
        "eps": 1e-6,
    }


def test_unknown_name_lists_available_names():
    with pytest.raises(ValueError, match="unknown attention 'sofmax'") as err:
        build_attention("sofmax")
    for name in available_attentions():
        assert name in str(err.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['windw'\]") as err:
        build_attention("cosformer", windw=3)
    for option in ("max_distance", "chunk_size", "window", "eps"):
        assert option in str(err.value)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("softmax", {"window": 0}, "window must be an int >= 1 or None"),
        ("softmax", {"window": -3}, "window must be an int >= 1 or None"),
        ("softmax", {"window": 2.5}, "window must be an int >= 1 or None"),
        ("cosformer", {"window": 0}, "window must be an int >= 1 or None"),
        ("cosformer", {"chunk_size": 0}, "chunk_size must be an int >= 1"),
        ("cosformer", {"max_distance": 0}, "max_distance must be an int >= 1"),
        ("cosformer", {"max_distance": 10, "window": 12}, "window=12 spans distances up to 11"),
        ("cosformer", {"eps": 0.0}, "eps must be a positive float"),
        ("combiner-fixed", {"span": 0}, "span must be an int >= 1 or None"),
        ("combiner-logsparse", {"window": 1.5}, "window must be an int >= 1 or None"),
    ],
)
def test_bad_option_values_raise_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_attention(name, **options)


def test_registration_requires_declared_capabilities_that_match_the_options():
    """A mechanism must declare what it supports, of the kind its base class has, naming only options it
    declares; nothing is guessed from its constructor."""
    from dt_attn import Capabilities, HiddenMixer
    from dt_attn.attention.base import register

    class Undeclared(Attention):
        OPTIONS = {"window": None}  # noqa: RUF012

    with pytest.raises(TypeError, match="declare what it supports"):
        register("test-undeclared")(Undeclared)

    class WindowNotAnOption(Attention):
        capabilities = Capabilities(kind="qkv", window=True, sizes=("span",))

    with pytest.raises(ValueError, match=r"option\(s\) \['span', 'window'\] that OPTIONS does not declare"):
        register("test-window")(WindowNotAnOption)

    class WrongKind(HiddenMixer):
        capabilities = Capabilities(kind="qkv")

    with pytest.raises(ValueError, match="capabilities.kind is 'qkv' but the class is a HiddenMixer"):
        register("test-kind")(WrongKind)
    assert not {"test-undeclared", "test-window", "test-kind"} & set(available_attentions())
    with pytest.raises(ValueError, match="kind must be one of"):
        Capabilities(kind="conv")


def test_hidden_mixers_are_built_with_the_stack_widths_and_listed_by_kind():
    assert available_attentions("hidden") == ["gmlp", "r-transformer"]
    kinds = set(available_attentions("qkv")) | set(available_attentions("hidden"))
    assert kinds == set(available_attentions())
    with pytest.raises(ValueError, match="gmlp mixes hidden states, not q, k, v: build it with "
                                         "build_token_mixer"):
        build_attention("gmlp")
    from dt_attn import build_token_mixer

    assert build_token_mixer("gmlp", 8, 2, local_window=3).options() == {"local_window": 3}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['window'\]"):
        build_token_mixer("gmlp", 8, 2, window=3)


def test_largest_window_allowed_by_max_distance():
    assert build_attention("cosformer", max_distance=10, window=11).window == 11
