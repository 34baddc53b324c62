"""The token mixers beyond softmax, cosFormer and Combiner (AFT, N-gram, gMLP, R-Transformer) and the
mixture-of-experts channel mixer: worked examples, gradients, what each is meant to see, and in the stack."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_qkv

from agents.config import TrainConfig, _mlp_ok
from agents.model import DecisionTransformer, DTConfig
from dt_attn import CausalTransformer, TransformerConfig, build_attention, build_token_mixer, capabilities
from dt_attn.channel import MixtureOfExperts, parse_mlp
from dt_attn.ops.reference import local_rnn


def _float64(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The module in float64 with its own parameters (biases, kernels) moved off their initialisation."""
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# ------------------------------------------------------------------------------------------ AFT
def test_aft_simple_worked_example():
    """One channel: y_1 = sigmoid(q_1) (e^{k_0} v_0 + e^{k_1} v_1) / (e^{k_0} + e^{k_1})."""
    q = torch.tensor([0.3, -0.5], dtype=torch.float64).view(1, 1, 2, 1)
    k = torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 1, 2, 1)
    v = torch.tensor([4.0, -1.0], dtype=torch.float64).view(1, 1, 2, 1)
    out = build_attention("aft-simple")(q, k, v)[0, 0, :, 0]
    e0, e1 = math.exp(1.0), math.exp(2.0)
    sig = torch.sigmoid(q[0, 0, :, 0])
    torch.testing.assert_close(out, torch.stack([sig[0] * 4.0, sig[1] * (e0 * 4.0 - e1) / (e0 + e1)]))


def test_aft_local_biases_act_within_the_window_and_far_tokens_still_count():
    """With a local window of 2, the bias w_1 weighs the previous token; a token 3 back has bias 0 and still
    moves the output (zero bias, not -inf)."""
    attn = build_attention("aft-local", local_window=2).double()
    with torch.no_grad():
        attn.bias.copy_(torch.tensor([0.0, 3.0], dtype=torch.float64))
    q, k, v = random_qkv(batch=1, heads=1, tokens=5, dim=2, dtype=torch.float64, seed=4)
    out = attn(q, k, v)
    w = torch.tensor([0.0, 0.0, 0.0, 3.0, 0.0], dtype=torch.float64)  # biases of keys 0..4 seen from query 4
    a = torch.softmax(k[0, 0] + w[:, None], dim=0)
    torch.testing.assert_close(out[0, 0, 4], torch.sigmoid(q[0, 0, 4]) * (a * v[0, 0]).sum(0))
    moved = v.clone()
    moved[:, :, 1] += 1.0
    assert (attn(q, k, moved)[0, 0, 4] - out[0, 0, 4]).abs().min() > 1e-3


def test_aft_keeps_a_running_maximum_so_huge_keys_stay_finite_in_float32():
    """Keys of +-200 overflow exp() in float32; the scan and the step compare logits to the running maximum
    and match the float64 oracle."""
    q, k, v = random_qkv(batch=1, heads=2, tokens=19, dim=3, dtype=torch.float64, seed=2)
    k = k * 200
    for name, opts in (("aft-simple", {}), ("aft-local", {"local_window": 4})):
        oracle = _float64(build_attention(name, **opts))
        want = oracle.reference(q, k, v)
        attn = build_attention(name, **opts)
        attn.load_state_dict({n: p.float() for n, p in oracle.state_dict().items()})
        got = attn(q.float(), k.float(), v.float())
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
        from conftest import run_steps

        torch.testing.assert_close(run_steps(attn, q.float(), k.float(), v.float()).double(), want, atol=1e-5,
                                   rtol=1e-5)


# --------------------------------------------------------------------------------------- N-gram
def test_ngram_sees_exactly_the_last_n_tokens():
    """The output at t moves with key t - n + 1 and not with key t - n, in training and step by step."""
    attn = build_attention("ngram", n=3)
    q, k, v = random_qkv(batch=1, heads=1, tokens=8, dtype=torch.float64, seed=1)
    out = attn(q, k, v)
    for changed, moves in ((5, True), (4, False)):
        v2 = v.clone()
        v2[:, :, changed] += 1.0
        diff = (attn(q, k, v2)[0, 0, 7] - out[0, 0, 7]).abs().max()
        assert (diff > 1e-3) if moves else (diff == 0)
    assert build_attention("ngram", n=3).options() == {"n": 3}
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        build_attention("ngram", n=0)


# -------------------------------------------------------------------------------- hidden mixers
@pytest.mark.parametrize("name", ["gmlp", "r-transformer"])
def test_hidden_mixers_equal_their_oracle_over_lengths_around_the_local_window(name):
    """The parallel form equals the explicit one (the T x T Toeplitz product; the GRU run per position)
    in float64, for lengths shorter than, equal to and past the local window."""
    torch.manual_seed(0)
    mixer = _float64(build_token_mixer(name, 8, 2, local_window=4), seed=1)
    for T in (1, 3, 4, 9, 13):
        h = torch.randn(2, T, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
        torch.testing.assert_close(mixer(h), mixer.reference(h), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["gmlp", "r-transformer"])
def test_hidden_mixers_mean_the_same_at_every_position(name):
    """Shift-invariant: once a token's local window lies inside the sequence, its output does not depend on
    where the sequence started (gMLP's Toeplitz kernel and per-channel b; the local RNN over M tokens)."""
    torch.manual_seed(0)
    mixer = _float64(build_token_mixer(name, 8, 2, local_window=3), seed=2)
    if name == "r-transformer":  # the attention reads every earlier token: check the local RNN alone
        h = torch.randn(1, 12, 8, dtype=torch.float64)
        torch.testing.assert_close(local_rnn(h[:, 5:], mixer.rnn, 3)[:, 2:],
                                   local_rnn(h, mixer.rnn, 3)[:, 7:])
        return
    h = torch.randn(1, 12, 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(h[:, 5:])[:, 2:], mixer(h)[:, 7:], atol=1e-12, rtol=0)


def test_gmlp_starts_near_the_identity_gate():
    """W near 0 and b = 1 (the paper's initialisation): at first the unit passes u through, u * (W z + b)
    ~ u."""
    torch.manual_seed(0)
    mixer = build_token_mixer("gmlp", 16, 1, local_window=5)
    assert mixer.kernel.abs().max() < 1e-2 and torch.equal(mixer.gate_bias, torch.ones(16))
    h = torch.randn(2, 7, 16)
    u, _ = mixer._halves(h)
    torch.testing.assert_close(mixer(h), mixer.proj_out(u), atol=1e-2, rtol=0)


@pytest.mark.parametrize("name", ["aft-simple", "aft-local", "ngram"])
def test_gradcheck_of_the_new_attentions(name):
    q, k, v = (x.requires_grad_() for x in random_qkv(batch=1, heads=1, tokens=5, dim=2, dtype=torch.float64))
    attn = _float64(build_attention(name, **({"n": 2} if name == "ngram" else {})))
    assert torch.autograd.gradcheck(lambda *x: attn(*x), (q, k, v))
    if name == "aft-local":
        assert torch.autograd.gradcheck(lambda b: torch.func.functional_call(attn, {"bias": b}, (q, k, v)),
                                        (attn.bias.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("name", ["gmlp", "r-transformer"])
def test_gradcheck_of_the_hidden_mixers(name):
    torch.manual_seed(0)
    mixer = _float64(build_token_mixer(name, 4, 2, local_window=2))
    h = torch.randn(1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mixer, (h,))


# ---------------------------------------------------------------------------- mixture of experts
def _moe(seed: int = 0, experts: int = 4, top_k: int = 2) -> MixtureOfExperts:
    torch.manual_seed(seed)
    return MixtureOfExperts(8, 16, "relu", experts, top_k)


def test_moe_routes_each_token_to_its_top_k_experts_with_probability_gates():
    moe = _moe()
    x = torch.randn(3, 5, 8)
    out = moe(x)
    assert int(moe.tokens_per_expert.sum()) == 15 * 2
    probs = torch.softmax(moe.router(x.reshape(15, 8)), -1)
    gate, chosen = probs.topk(2, -1)
    flat = x.reshape(15, 8)
    want = torch.stack([sum(gate[i, j] * moe.experts[int(chosen[i, j])](flat[i]) for j in range(2))
                        for i in range(15)])
    torch.testing.assert_close(out.reshape(15, 8), want, atol=1e-6, rtol=1e-6)


def test_moe_balance_loss_is_one_when_routing_is_uniform_and_moves_the_router():
    """EXPERTS * sum_e f_e P_e: 1 with uniform probabilities; alone, it gives the router a gradient."""
    moe = _moe()
    x = torch.randn(4, 6, 8)
    with torch.no_grad():
        uniform = _moe()
        uniform.router.weight.zero_()
        uniform(x)
    assert uniform.balance_loss.item() == pytest.approx(1.0)
    moe(x)
    moe.balance_loss.backward()
    assert moe.router.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in moe.experts.parameters())  # the loss reaches the router alone


def test_moe_experts_without_tokens_still_get_a_zero_gradient():
    """Two tokens, six experts: the idle experts' parameters get zero gradients rather than none, as
    DistributedDataParallel needs of every parameter in every step."""
    moe = _moe(experts=6, top_k=1)
    moe(torch.randn(1, 2, 8)).sum().backward()
    assert int((moe.tokens_per_expert == 0).sum()) >= 4
    for e, expert in enumerate(moe.experts):
        for p in expert.parameters():
            assert p.grad is not None
            assert (p.grad.abs().max() == 0) == (moe.tokens_per_expert[e] == 0)


def test_moe_routing_is_deterministic_for_a_seed():
    x = torch.randn(2, 9, 8)
    runs = [(_moe(seed=3), x) for _ in range(2)]
    outs = [m(x) for m, x in runs]
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(runs[0][0].tokens_per_expert, runs[1][0].tokens_per_expert)
    assert not torch.equal(_moe(seed=4)(x), outs[0])


def test_moe_empty_batch_and_the_spec_are_checked():
    moe = _moe()
    assert moe(torch.randn(0, 3, 8)).shape == (0, 3, 8) and moe.balance_loss.item() == 0.0
    for spec, ok in (("mlp", True), ("moe:4:1", True), ("moe:4:4", True), ("moe:4:5", False),
                     ("moe:0:0", False), ("moe:4", False), ("moe:a:1", False), ("dense", False)):
        assert _mlp_ok(spec) == ok, spec  # the torch-free check agrees with dt_attn's parser
        if ok:
            parse_mlp(spec)
        else:
            with pytest.raises(ValueError, match="mlp must be 'mlp' or 'moe:EXPERTS:TOP_K'"):
                parse_mlp(spec)
    with pytest.raises(ValueError, match=r"mlp='moe:2:3' \(must be mlp or moe:EXPERTS:TOP_K"):
        TrainConfig(mlp="moe:2:3")


@pytest.mark.parametrize("attention", ["softmax", "aft-local", "gmlp"])
def test_moe_stack_steps_equal_its_parallel_form_and_reports_the_weighted_aux_loss(attention):
    """Under attention over q, k, v and under a hidden-state mixer alike."""
    torch.manual_seed(0)
    cfg = TransformerConfig(embed_dim=8, n_layers=2, n_heads=2, dropout=0.0, mlp="moe:3:2",
                            moe_aux_weight=0.5, attention=attention)
    model = CausalTransformer(cfg).eval()
    x = torch.randn(2, 7, 8)
    with torch.no_grad():
        full = model(x)
        aux = model.aux_loss()
        state, outs = model.init_state(2), []
        for n in (2, 3, 2):
            out, state = model.step_many(x[:, sum(o.shape[1] for o in outs):][:, :n], state)
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    layers = [b.mlp for b in model.blocks]
    assert aux is not None and len(model.tokens_per_expert()) == 2
    assert CausalTransformer(TransformerConfig(embed_dim=8, n_layers=1)).aux_loss() is None
    model(x)
    torch.testing.assert_close(model.aux_loss(), 0.5 * (layers[0].balance_loss + layers[1].balance_loss))


def test_moe_decision_transformer_exact_rollout_equals_a_rerun():
    torch.manual_seed(0)
    cfg = DTConfig(state_dim=3, act_dim=2, context=3, max_ep_len=20, init_std=0.3,
                   transformer=TransformerConfig(embed_dim=8, n_layers=2, n_heads=2, dropout=0.0,
                                                 mlp="moe:4:1"))
    model = DecisionTransformer(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    s, r = torch.randn(2, 8, 3, generator=g, dtype=torch.float64), torch.randn(2, 8, 1, generator=g,
                                                                               dtype=torch.float64)
    a, ts = torch.zeros(2, 8, 2, dtype=torch.float64), torch.arange(8).expand(2, 8)
    state, prev = model.init_exact_state(2), None
    with torch.no_grad():
        for t in range(8):
            prev, state = model.act_exact(state, r[:, t], s[:, t], ts[:, t], prev)
            lo = max(0, t - 2)
            seg = [x[:, lo : t + 1] for x in (s, a, r, ts)]
            torch.testing.assert_close(prev, model(*seg, last_only=True)[:, -1], atol=1e-12, rtol=0)
            a[:, t] = prev


def test_every_mechanism_declares_costs_and_state_for_the_docs():
    from dt_attn import available_attentions

    for name in available_attentions():
        caps = capabilities(name)
        assert caps.training_cost and caps.state and caps.step_cost, name


def test_moe_training_logs_its_aux_loss_and_tokens_per_expert_to_tensorboard_and_eval_names_it(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_agent_e2e import tiny

    from agents.config import EvalConfig
    from agents.evaluation import evaluate
    from agents.trainer import Trainer

    cfg = tiny(tmp_path, mlp="moe:3:1", moe_aux_weight=0.1, steps=2, log_every=1)
    Trainer(cfg, progress=False).train()
    result = evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=1, envs=1, targets=[500.0], max_steps=3),
                      progress=False, print_table=False)
    assert result["mlp"] == "moe:3:1"  # the evaluation record names the channel mixer
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/aux_loss", "moe/layer0/expert0_tokens", "moe/layer0/expert2_tokens"} <= tags
    shares = [acc.Scalars(f"moe/layer0/expert{e}_tokens")[-1].value for e in range(3)]
    assert sum(shares) == pytest.approx(1.0)
    assert acc.Scalars("train/aux_loss")[-1].value >= 0.1 * 0.999  # weight x a loss that is >= 1
