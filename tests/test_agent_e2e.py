"""Train/evaluate end to end on the embedded dataset: every attention, checkpoints, resume, errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from agents import rollout as rollout_mod
from agents import trainer as trainer_mod
from agents.checkpoint import load_checkpoint
from agents.config import ACTIVATION_NAMES, EvalConfig, TrainConfig, config_differences
from agents.evaluation import evaluate, load_policy
from agents.rollout import run_episodes
from agents.trainer import NonFiniteLossError, Trainer
from agents.upgrade import FORMAT, read_run_config
from dt_attn import TransformerConfig, available_attentions, capabilities
from dt_attn.transformer import ACTIVATIONS
from envs import load_dataset, make_vector_env
from experiments.cli import main as cli_main


def tiny(tmp_path, **over) -> TrainConfig:
    base = {"dataset": "default", "attention": "cosformer", "context": 4, "embed_dim": 16, "n_layers": 1,
            "n_heads": 1, "batch_size": 8, "steps": 6, "warmup_steps": 2, "checkpoint_every": 3,
            "log_every": 2, "eval_episodes": 0, "run_dir": str(tmp_path / "run"), "seed": 0, "threads": 1}
    base.update(over)
    return TrainConfig(**base)


def die_at_sample(monkeypatch, trainer: Trainer, call: int) -> None:
    """Make ``trainer``'s ``call``-th batch draw raise KeyboardInterrupt, as a kill mid-run would stop it."""
    real_sample, calls = trainer.sampler.sample, {"n": 0}

    def dying_sample(n, part=None):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real_sample(n, part)

    monkeypatch.setattr(trainer.sampler, "sample", dying_sample)


@pytest.mark.parametrize("attention", available_attentions())
def test_train_then_evaluate_every_attention(tmp_path, attention):
    cfg = tiny(tmp_path, attention=attention)
    summary = Trainer(cfg, progress=False).train()
    assert summary["steps"] == 6 and summary["parameters"] > 0 and summary["steps_per_s"] > 0
    assert summary["versions"]["torch"] == torch.__version__ and summary["versions"]["cpu"]
    if attention == "softmax":  # segments reaching back past an episode start hold fewer than K targets
        lengths = [len(e) for e in load_dataset("default").episodes]
        per_segment = sum(min(4, t + 1) for n in lengths for t in range(n)) / sum(lengths)
        assert summary["targets_per_step"] == pytest.approx(8 * per_segment) and per_segment < 4
    result = evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=2, envs=2, targets=[1800.0], max_steps=15),
                      progress=False, print_table=False)
    rec = result["results"][0]
    assert rec["episodes"] == 2 and len(rec["returns"]) == 2
    assert all(1 <= n <= 15 for n in rec["lengths"])
    ref_min, ref_max = -20.272305, 3234.3  # hopper D4RL references
    np.testing.assert_allclose(rec["normalized_mean"],
                               np.mean([100 * (r - ref_min) / (ref_max - ref_min) for r in rec["returns"]]),
                               rtol=1e-6)
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    for key in ("format", "dataset", "dataset_label", "env_id", "observe", "attention", "activation",
                "context", "train_seed", "train_steps", "eval_seed", "score_reference", "rollout", "method",
                "results", "versions"):
        assert key in saved, key
    assert saved["train_steps"] == 6 and saved["attention"] == attention and saved["env_id"] == "Hopper-v4"
    assert saved["activation"] == "relu" and "CPUs" in saved["versions"]["cpu"]
    assert saved["rollout"] == "exact" and saved["method"] == "exact: the last 4 steps re-run every step"
    assert "stand-in" in saved["dataset_label"]


def test_checkpoint_round_trip(tmp_path):
    cfg = tiny(tmp_path)
    tr = Trainer(cfg, progress=False)
    tr.train()
    policy = load_policy(load_checkpoint(cfg.run_dir))
    batch = tr.sampler.sample(4)
    tr.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            policy(batch.states, batch.actions, batch.rtg, batch.timesteps, batch.pad_mask),
            tr.model(batch.states, batch.actions, batch.rtg, batch.timesteps, batch.pad_mask))


def test_checkpoint_saved_before_the_activation_field_loads_as_gelu(tmp_path):
    """Format-1 runs saved before the MLP activation became a config value used GELU; their checkpoints and
    config.json are read that way (through agents.upgrade), not as today's ReLU default."""
    cfg = tiny(tmp_path, activation="gelu")
    tr = Trainer(cfg, progress=False)
    tr.train()
    path = tmp_path / "run" / "checkpoint.pt"
    raw = torch.load(path, weights_only=False)
    assert raw["format"] == FORMAT and raw["model_config"]["transformer"]["activation"] == "gelu"
    raw["format"] = "dt-attn/checkpoint/1"  # as format 1 wrote it: a flat model config, before the field
    stack = raw["model_config"].pop("transformer")
    # the fields format 1 did not have yet are left out
    raw["model_config"].update({k: v for k, v in stack.items()
                                if k not in ("activation", "mlp_ratio", "attention_dropout", "mlp",
                                             "moe_aux_weight")})
    del raw["config"]["activation"], raw["config"]["attention_dropout"], raw["config"]["embed_dropout"]
    del raw["config"]["mlp"], raw["config"]["moe_aux_weight"]
    del raw["model_config"]["embed_dropout"]
    torch.save(raw, path)
    payload = load_checkpoint(cfg.run_dir)
    assert payload["format"] == FORMAT and payload["config"]["activation"] == "gelu"
    policy = load_policy(payload)
    assert isinstance(policy.transformer.blocks[0].mlp[1], torch.nn.GELU)
    batch = tr.sampler.sample(4)
    tr.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(policy(batch.states, batch.actions, batch.rtg, batch.timesteps,
                                          batch.pad_mask),
                                   tr.model(batch.states, batch.actions, batch.rtg, batch.timesteps,
                                            batch.pad_mask))
    config_json = tmp_path / "run" / "config.json"
    saved = {k: v for k, v in json.loads(config_json.read_text()).items()
             if k not in ("activation", "format")}
    config_json.write_text(json.dumps(saved))
    saved = read_run_config(config_json)
    assert config_differences(saved, tiny(tmp_path, activation="gelu")) == []
    assert config_differences(saved, tiny(tmp_path)) == ["activation (saved 'gelu', now 'relu')"]
    assert isinstance(Trainer(tiny(tmp_path, run_dir=str(tmp_path / "relu"), steps=1), progress=False)
                      .model.transformer.blocks[0].mlp[1], torch.nn.ReLU)  # the default: the DT paper's code


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_after_kill_reaches_same_weights(tmp_path, monkeypatch, precision):
    full = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "full"), steps=8, checkpoint_every=4, dropout=0.1,
                        precision=precision), progress=False)
    full.train()

    killed_cfg = tiny(tmp_path, run_dir=str(tmp_path / "killed"), steps=8, checkpoint_every=4, dropout=0.1,
                      precision=precision)
    killed = Trainer(killed_cfg, progress=False)
    die_at_sample(monkeypatch, killed, 7)  # dies between the checkpoints at step 4 and 8
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert load_checkpoint(tmp_path / "killed")["step"] == 4
    resumed = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "killed"), steps=8, checkpoint_every=4,
                           dropout=0.1, precision=precision, resume=True), progress=False)
    assert resumed.step == 4
    resumed.train()
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name


NEW_MIXERS = [("aft-simple", "mlp"), ("aft-local", "mlp"), ("ngram", "mlp"), ("gmlp", "mlp"),
              ("r-transformer", "mlp"), ("softmax", "moe:3:2")]


@pytest.mark.parametrize("attention,mlp", NEW_MIXERS)
def test_resume_after_kill_reaches_same_weights_for_every_new_mixer(tmp_path, monkeypatch, attention, mlp):
    """Killed between checkpoints and resumed, a run of each token mixer and of the mixture of experts ends
    at the weights of the uninterrupted run, which are finite and moved from their start."""
    over = {"attention": attention, "mlp": mlp, "steps": 4, "checkpoint_every": 2, "dropout": 0.1, "lr": 1e-3}
    full = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "full"), **over), progress=False)
    start = {k: v.clone() for k, v in full.model.state_dict().items()}
    full.train()
    killed = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "killed"), **over), progress=False)
    die_at_sample(monkeypatch, killed, 4)  # dies between the checkpoints at step 2 and 4
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "killed"), resume=True, **over), progress=False)
    assert resumed.step == 2
    resumed.train()
    final = full.model.state_dict()
    for (name, p), q in zip(final.items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
        assert torch.isfinite(p).all(), name
    assert any(not torch.equal(final[k], v) for k, v in start.items())


def test_resumed_run_keeps_the_larger_peak_memory(tmp_path):
    """A run resumed (even with nothing left to train, to be evaluated again) reports the peak memory of
    its largest process, not only the resuming one's."""
    cfg = tiny(tmp_path, steps=2)
    first = Trainer(cfg, progress=False).train()
    summary_path = tmp_path / "run" / "train_summary.json"
    summary = json.loads(summary_path.read_text())
    summary["peak_memory_mb"] = 1e6  # as if the training process had been far larger
    summary_path.write_text(json.dumps(summary))
    again = Trainer(tiny(tmp_path, steps=2, resume=True), progress=False).train()
    assert again["peak_memory_mb"] == 1e6 and again["steps"] == 2
    summary_path.write_text("{damaged")
    third = Trainer(tiny(tmp_path, steps=2, resume=True), progress=False).train()
    assert 0 < third["peak_memory_mb"] < 1e6 and first["peak_memory_mb"] > 0


def test_same_seed_same_weights(tmp_path):
    a = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "a")), progress=False)
    b = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "b")), progress=False)
    a.train()
    b.train()
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, steps=6, checkpoint_every=2)
    tr = Trainer(cfg, progress=False)
    real = trainer_mod.action_error
    calls = {"n": 0}

    def nan_later(model, batch):
        calls["n"] += 1
        error_sum, targets = real(model, batch)
        return (error_sum * float("nan") if calls["n"] == 4 else error_sum), targets

    monkeypatch.setattr(trainer_mod, "action_error", nan_later)
    with pytest.raises(NonFiniteLossError, match="step 4.*step 2"):
        tr.train()
    assert load_checkpoint(cfg.run_dir)["step"] == 2


def _rollout_actions(model, rollout, steps=12, n=2):
    envs = make_vector_env("Hopper-v4", n, 7)
    try:
        return run_episodes(model, envs, target=1800.0, state_mean=np.zeros(11), state_std=np.ones(11),
                            rtg_scale=1000.0, seed=7, max_steps=steps, rollout=rollout)
    finally:
        envs.close()


def _tiny_policy(attention: str, context: int, n_layers: int = 1):
    from agents.model import DecisionTransformer, DTConfig

    torch.manual_seed(0)
    opts = {"span": 4} if attention.startswith("combiner") else {}
    return DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context=context, max_ep_len=12,
                                        transformer=TransformerConfig(embed_dim=16, n_layers=n_layers,
                                                                      dropout=0.0, attention=attention,
                                                                      attention_options=opts))).eval()


@pytest.mark.parametrize("attention", available_attentions())
def test_streaming_rollout_slides_a_window_and_says_it_is_approximate(attention, monkeypatch):
    """Streaming with K shorter than the episode slides a window of 3K - 1 tokens with every built-in
    mechanism, labelled approximate; asked of a mechanism without a window option it falls back to the
    exact rollout, and says so. K holding the episode is exact whatever was asked."""
    model = _tiny_policy(attention, context=4, n_layers=2)
    plan = rollout_mod.plan_rollout(model, "streaming", max_steps=12)
    if not capabilities(attention).window:  # N-gram, AFT, gMLP: nothing to slide a window with
        assert plan.rollout == "exact" and f"{attention} has no window option" in plan.method
        return
    assert plan.rollout == "streaming"
    assert plan.method.startswith("streaming (approximate): sliding window of 11 tokens per "
                                  "layer; after 4 steps")
    assert "window" not in model.cfg.transformer.attention_options
    assert rollout_mod.plan_rollout(model, "streaming", max_steps=4).rollout == "exact"
    monkeypatch.setattr(rollout_mod, "capabilities",
                        lambda name: dataclasses.replace(capabilities(name), window=False))
    plan = rollout_mod.plan_rollout(model, "streaming", max_steps=12)
    assert plan.rollout == "exact" and f"{attention} has no window option" in plan.method
    with pytest.raises(ValueError, match="rollout must be one of exact, streaming, got 'naive'"):
        rollout_mod.plan_rollout(model, "naive", max_steps=12)


@pytest.mark.parametrize("attention", available_attentions())
@pytest.mark.parametrize("n_layers,context", [(2, 12), (1, 4)])
def test_streaming_and_exact_rollouts_agree_where_streaming_is_exact(tmp_path, attention, n_layers, context):
    """Whole-context (K >= steps) agrees for every mechanism; one layer agrees with a sliding window too
    (Combiner over the first K steps only: its streaming blocks stay aligned to the episode start, the
    exact window's to the window start; R-Transformer too: its local RNN reads tokens before the window)."""
    caps = capabilities(attention)
    steps = context if caps.absolute_position or caps.kind == "hidden" else 12
    model = _tiny_policy(attention, context, n_layers)
    fast = _rollout_actions(model, "streaming", steps=steps)
    slow = _rollout_actions(model, "exact", steps=steps)
    streams = steps > context and capabilities(attention).window
    assert slow.rollout == "exact" and fast.rollout == ("streaming" if streams else "exact")
    # Tight: a window one token too long (3K, reaching back to a_{t-K}) moved these returns by ~4e-4.
    np.testing.assert_allclose(fast.returns, slow.returns, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(fast.lengths, slow.lengths)


@pytest.mark.parametrize("attention", ["softmax", "cosformer"])
def test_one_layer_streaming_policy_takes_the_exact_actions_after_k_steps(attention):
    """With one layer the rollout window holds exactly the trained segment R_{t-K+1} .. s_t, so every
    action equals the exact one (the model on the last K steps), long after the window started to slide;
    a window of 3K tokens (one more: a_{t-K}) does not."""
    k, steps = 3, 10
    model = _tiny_policy(attention, k, n_layers=1)
    g = torch.Generator().manual_seed(1)
    s, a = torch.randn(2, steps, 11, generator=g), torch.randn(2, steps, 3, generator=g).tanh()
    r, t = torch.randn(2, steps, 1, generator=g), torch.arange(steps).expand(2, steps)
    policy = model.with_attention_options(window=3 * k - 1)
    too_long = model.with_attention_options(window=3 * k)
    with torch.no_grad():
        states = [policy.init_state(2), too_long.init_state(2)]
        worst = [0.0, 0.0]
        for i in range(steps):
            exact = model(s[:, max(0, i + 1 - k) : i + 1], a[:, max(0, i + 1 - k) : i + 1],
                          r[:, max(0, i + 1 - k) : i + 1], t[:, max(0, i + 1 - k) : i + 1],
                          last_only=True)[:, -1]
            for j, m in enumerate((policy, too_long)):
                action, states[j] = m.act(states[j], r[:, i], s[:, i], t[:, i], a[:, i - 1] if i else None)
                worst[j] = max(worst[j], float((action - exact).abs().max()))
    assert worst[0] < 1e-5 < worst[1]


# ---------------------------------------------------------------------------- errors
def _cli_error(capsys, argv):
    code = cli_main(argv)
    return code, capsys.readouterr().err


def test_cli_rejects_bad_inputs(tmp_path, capsys):
    run = str(tmp_path / "r")
    code, err = _cli_error(capsys, ["train", "--dataset", "no-such-dataset-v2", "--run-dir", run])
    assert code == 2 and "no-such-dataset-v2" in err
    code, err = _cli_error(capsys, ["train", "--attention", "nope", "--run-dir", run])
    assert code == 2 and "unknown attention 'nope'" in err and "cosformer" in err
    code, err = _cli_error(capsys, ["train", "--context", "0", "--run-dir", run])
    assert code == 2 and "context" in err
    code, err = _cli_error(capsys, ["train", "--context", "1001", "--run-dir", run])
    assert code == 2 and "1..1000" in err
    code, err = _cli_error(capsys, ["train", "--eval-every", "-1", "--run-dir", run])
    assert code == 2 and "eval_every=-1" in err
    code, err = _cli_error(capsys, ["train", "--activation", "swish", "--run-dir", run])
    assert code == 2 and "activation='swish'" in err and "must be one of relu, gelu" in err
    code, err = _cli_error(capsys, ["eval", "--checkpoint", str(tmp_path / "missing")])
    assert code == 2 and "no checkpoint" in err


def test_evaluation_during_training_leaves_training_unchanged(tmp_path, capsys):
    plain = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "plain"), steps=6, dropout=0.1), progress=False)
    plain.train()
    cfg = tiny(tmp_path, run_dir=str(tmp_path / "evals"), steps=6, dropout=0.1, eval_every=2, eval_episodes=1,
               eval_envs=1, eval_targets=[1800.0])
    watched = Trainer(cfg, progress=False)
    watched.train()
    for (name, p), q in zip(plain.model.state_dict().items(), watched.model.state_dict().values()):
        # same dropout masks and batches: evaluation drew no training randomness
        assert torch.equal(p, q), name
    files = sorted(p.name for p in (tmp_path / "evals" / "evals").iterdir())
    assert files == ["step-0000002.json", "step-0000004.json"]  # the final evaluation is train_and_evaluate's
    ev = json.loads((tmp_path / "evals" / "evals" / "step-0000004.json").read_text())
    assert ev["train_steps"] == 4
    assert ev["results"][0]["target"] == 1800.0 and ev["results"][0]["episodes"] == 1
    assert "step 2: normalized target 1800: " in capsys.readouterr().out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "evals" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/target_1800/normalized_mean")] == [2, 4]


def test_streaming_evaluations_during_and_after_training_say_they_are_approximate(tmp_path, capsys):
    """--rollout streaming with --eval-every: every evaluation streams (evals/step-N-streaming.json,
    eval-streaming.json, TensorBoard eval_streaming/), each labelled approximate, and the weights are those of
    a run without evaluations."""
    from experiments.commands.train import train_and_evaluate

    plain = Trainer(tiny(tmp_path, run_dir=str(tmp_path / "plain"), steps=4, dropout=0.1, n_layers=2),
                    progress=False)
    plain.train()
    cfg = tiny(tmp_path, run_dir=str(tmp_path / "streaming"), steps=4, dropout=0.1, n_layers=2, eval_every=2,
               eval_episodes=1, eval_envs=1, eval_targets=[1800.0], rollout="streaming")
    out = train_and_evaluate(cfg, progress=False)
    run = tmp_path / "streaming"
    weights = load_checkpoint(run)["model"]
    for name, p in plain.model.state_dict().items():
        assert torch.equal(p, weights[name]), name
    assert sorted(p.name for p in (run / "evals").iterdir()) == ["step-0000002-streaming.json"]
    periodic = json.loads((run / "evals" / "step-0000002-streaming.json").read_text())
    final = json.loads((run / "eval-streaming.json").read_text())
    assert not (run / "eval.json").exists() and out["eval"]["rollout"] == "streaming"
    for record in (periodic, final):
        assert record["rollout"] == "streaming" and record["eval_config"]["rollout"] == "streaming"
        assert record["method"].startswith("streaming (approximate): sliding window of 11 tokens per layer")
    assert final["train_steps"] == 4
    printed = capsys.readouterr().out
    assert "step 2: normalized target 1800: " in printed and "(streaming (approximate))" in printed
    assert printed.count("rollout: streaming (approximate): sliding window") == 1  # one table, the one asked
    assert "rollout: exact" not in printed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval_streaming/target_1800/normalized_mean")] == [2, 4]
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("eval/")]


def test_existing_run_needs_resume_flag(tmp_path):
    cfg = tiny(tmp_path, steps=2)
    Trainer(cfg, progress=False).train()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg, progress=False)
    with pytest.raises(ValueError, match="attention"):
        Trainer(tiny(tmp_path, steps=4, resume=True, attention="softmax"), progress=False)


def test_checkpoint_env_and_observe_mismatch(tmp_path):
    cfg = tiny(tmp_path, steps=2)
    Trainer(cfg, progress=False).train()
    with pytest.raises(ValueError, match="HalfCheetah-v4"):
        evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=1, envs=1, env_id="HalfCheetah-v4", max_steps=3),
                 progress=False, print_table=False)
    with pytest.raises(ValueError, match="observe"):
        evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=1, envs=1, observe="positions", max_steps=3),
                 progress=False, print_table=False)


def test_damaged_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(tmp_path)


def test_standalone_eval_keeps_earlier_results(tmp_path):
    cfg = tiny(tmp_path, steps=2)
    Trainer(cfg, progress=False).train()
    ev = EvalConfig(checkpoint=cfg.run_dir, episodes=1, envs=1, targets=[100.0], max_steps=3)
    evaluate(ev, progress=False, print_table=False)
    first = (tmp_path / "run" / "eval.json").read_text()
    evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=1, envs=1, targets=[200.0], max_steps=3),
             progress=False, print_table=False)
    assert (tmp_path / "run" / "eval.json").read_text() == first
    later = sorted((tmp_path / "run").glob("eval-*.json"))
    assert len(later) == 1 and json.loads(later[0].read_text())["results"][0]["target"] == 200.0


def test_train_command_logs_training_and_eval_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from experiments.commands.train import train_and_evaluate

    cfg = tiny(tmp_path, steps=4, eval_episodes=1, eval_envs=1, eval_targets=[500.0])
    out = train_and_evaluate(cfg, progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "perf/steps_per_s", "perf/tokens_per_s"} <= tags
    events = acc.Scalars("eval/target_500/normalized_mean")
    assert events[-1].step == 4
    assert abs(events[-1].value - out["eval"]["results"][0]["normalized_mean"]) < 1e-4


def test_evaluations_record_the_rollout_they_computed(tmp_path):
    """Streaming with K shorter than the episode is recorded as streaming; the exact rollout, and any rollout
    whose K holds the episode, as exact; each in its own file by default."""
    marks = {(k, rollout): _rollout_actions(_tiny_policy("cosformer", k, n_layers=2), rollout,
                                            steps=8).rollout
             for k in (4, 12) for rollout in ("exact", "streaming")}
    assert marks == {(4, "exact"): "exact", (4, "streaming"): "streaming", (12, "exact"): "exact",
                     (12, "streaming"): "exact"}
    cfg = tiny(tmp_path, steps=2, n_layers=2)
    Trainer(cfg, progress=False).train()
    for rollout, name in (("streaming", "eval-streaming.json"), ("exact", "eval.json")):
        result = evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=1, envs=1, targets=[1800.0],
                                     max_steps=8, rollout=rollout), progress=False, print_table=False)
        assert result["rollout"] == rollout == json.loads((tmp_path / "run" / name).read_text())["rollout"]
    with pytest.raises(ValueError, match=r"rollout='naive' \(must be one of exact, streaming\)"):
        EvalConfig(checkpoint=cfg.run_dir, rollout="naive")


def test_config_accepts_exactly_the_activations_the_transformer_builds():
    """The torch-free name list in agents.config must match what dt_attn.transformer can build."""
    assert sorted(ACTIVATION_NAMES) == sorted(ACTIVATIONS)


def test_config_accepts_exactly_the_init_schemes_the_model_builds():
    from agents.config import INIT_SCHEMES
    from agents.model import INIT_SCHEMES as MODEL_INIT_SCHEMES

    assert INIT_SCHEMES == MODEL_INIT_SCHEMES
    with pytest.raises(ValueError, match="init_std"):
        TrainConfig(init_std=0.0)
