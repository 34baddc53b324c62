"""Run folders of older formats (tests/data/run-format1, written by dt-attn's format-1 train command) load,
evaluate, resume and report as the current format, through agents.upgrade alone."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents.checkpoint import load_checkpoint
from agents.config import EvalConfig, TrainConfig, config_differences
from agents.evaluation import evaluate, load_policy
from agents.model import DecisionTransformer, DTConfig
from agents.upgrade import (
    FORMAT,
    final_evaluations,
    periodic_evaluations,
    read_run_config,
    upgrade_checkpoint,
    upgrade_evaluation,
    upgrade_run_config,
)
from dt_attn import TransformerConfig

FIXTURE = Path(__file__).parent / "data" / "run-format1"


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the format-1 run folder, its checkpoint unpacked."""
    run = tmp_path / "run-format1"
    shutil.copytree(FIXTURE, run)
    with gzip.open(run / "checkpoint.pt.gz") as src, open(run / "checkpoint.pt", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (run / "checkpoint.pt.gz").unlink()
    return run


def _saved(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


def test_format1_checkpoint_and_config_load_as_the_current_format(old_run):
    payload = load_checkpoint(old_run)
    assert payload["format"] == FORMAT == 4
    config = payload["config"]
    assert config["rollout"] == "streaming" and "eval_exact" not in config  # format 1's evaluations streamed
    assert read_run_config(old_run / "config.json") == config
    model = load_policy(payload)
    assert (model.cfg.context, model.cfg.transformer.n_layers, model.cfg.transformer.activation,
            model.cfg.init) == (4, 2, "relu", "normal")
    # resuming it compares the saved config through the upgrade: the same settings match, the rollout may
    # change
    now = TrainConfig(**{k: v for k, v in config.items() if k != "rollout"})
    assert config_differences(config, now) == []
    assert config_differences(config, dataclasses.replace(now, n_layers=3)) == ["n_layers (saved 2, now 3)"]


def test_format1_resume_continues_from_the_old_checkpoint(old_run, monkeypatch):
    from agents.trainer import Trainer

    monkeypatch.chdir(old_run.parent)  # the run was trained from its parent folder: run_dir "run-format1"
    saved = read_run_config(old_run / "config.json")
    trainer = Trainer(TrainConfig(**{**saved, "steps": 5, "resume": True, "eval_episodes": 0, "eval_every": 0,
                                      "rollout": "exact"}),
                      progress=False)
    assert trainer.step == 4
    trainer.train()
    assert load_checkpoint(old_run)["step"] == 5 and _saved(old_run, "config.json")["format"] == FORMAT
    assert _saved(old_run, "config.json")["rollout"] == "exact"


def test_format1_run_evaluates_exactly_as_its_exact_file_says(old_run):
    """The default evaluation of a format-1 run is exact and reproduces the returns its eval-naive.json holds
    (the same function, on the same environment seeds); the streaming one reproduces its eval.json. Written
    over eval.json, the exact evaluation moves the streaming one aside to eval-streaming.json."""
    old_exact, old_streaming = _saved(old_run, "eval-naive.json"), _saved(old_run, "eval.json")
    stamped = evaluate(EvalConfig(checkpoint=str(old_run), episodes=2, envs=2), progress=False,
                       print_table=False)
    assert stamped["rollout"] == "exact" and stamped["results"][0]["target"] == 1800.0
    np.testing.assert_allclose(stamped["results"][0]["returns"], old_exact["results"][0]["returns"],
                               rtol=1e-6)
    # an existing eval.json is never overwritten by default
    assert _saved(old_run, "eval.json") == old_streaming
    assert len(list(old_run.glob("eval-2*.json"))) == 1

    streaming = evaluate(EvalConfig(checkpoint=str(old_run), episodes=2, envs=2, rollout="streaming",
                                    output=str(old_run / "again-streaming.json")), progress=False,
                                    print_table=False)
    np.testing.assert_allclose(streaming["results"][0]["returns"], old_streaming["results"][0]["returns"],
                               rtol=1e-6)

    evaluate(EvalConfig(checkpoint=str(old_run), episodes=2, envs=2, output=str(old_run / "eval.json")),
             progress=False, print_table=False)
    assert _saved(old_run, "eval.json")["rollout"] == "exact"
    assert _saved(old_run, "eval-streaming.json") == old_streaming  # kept, under its rollout's name
    found = final_evaluations(old_run)
    assert found["exact"][0].name in ("eval.json", "eval-naive.json") and found["streaming"][0].name == (
        "eval-streaming.json")


def test_format1_run_reports_both_rollouts_and_both_curves(old_run):
    from experiments.reporting.report import build_report

    streaming = _saved(old_run, "eval.json")  # its score set apart, so that a figure tells where it came from
    streaming["results"][0]["normalized_mean"] += 10.0
    (old_run / "eval.json").write_text(json.dumps(streaming))
    rep = build_report([old_run], old_run.parent / "report", reference_fn=None, plots=False)
    with open(rep.files["runs_csv"]) as f:
        (row,) = list(csv.DictReader(f))
    exact = _saved(old_run, "eval-naive.json")
    assert row["rollout"] == "exact" and row["method"] == "exact: the last 4 steps re-run every step"
    assert float(row["normalized_mean"]) == pytest.approx(exact["results"][0]["normalized_mean"], rel=1e-5)
    assert (row["activation"], row["init"], row["precision"], row["K"]) == ("relu", "normal", "fp32", "4")
    with open(rep.files["rollout_pairs_csv"]) as f:
        (pair,) = list(csv.DictReader(f))
    assert float(pair["exact"]) == pytest.approx(exact["results"][0]["normalized_mean"], rel=1e-5)
    assert float(pair["streaming"]) == pytest.approx(streaming["results"][0]["normalized_mean"], rel=1e-5)
    assert float(pair["exact_minus_streaming"]) == pytest.approx(-10.0, rel=1e-5)
    with open(rep.files["curves_csv"]) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    with open(rep.files["curves_streaming_csv"]) as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    assert "| exact |" in rep.markdown and "streaming (approximate)" in rep.markdown
    assert sorted(periodic_evaluations(old_run)) == ["exact", "streaming"]


def test_format1_run_counts_as_evaluated_for_a_sweep(old_run):
    from experiments.commands.sweep import cell_status

    for rollout in ("exact", "streaming"):
        assert cell_status(old_run, 4, 2, [1800.0], rollout) == "done"
    assert cell_status(old_run, 4, 3, [1800.0], "exact") == "evaluate"


def test_format1_evaluation_records_upgrade_field_by_field():
    old = {"schema": "dt-attn/eval/1", "eval_config": {"naive": False, "seed": 3},
           "results": [{"target": 1.0, "rollout": ("incremental: sliding window of 59 tokens per layer "
                                                   "(streaming: ...; --naive is exact)")},
                       {"target": 2.0, "rollout": "x"}]}
    new = upgrade_evaluation(old)
    assert new["format"] == FORMAT and "schema" not in new and new["rollout"] == "streaming"
    assert new["method"] == "streaming (approximate): sliding window of 59 tokens per layer"
    assert new["eval_config"] == {"rollout": "streaming", "seed": 3}
    assert all("rollout" not in r for r in new["results"])
    assert (new["activation"], new["init"], new["init_std"], new["train_precision"]) == (
        "gelu", "torch-default", 0.02, "fp32")  # what format-1 runs without the fields used
    rerun = "exact: the last 20 steps re-run every step"
    described = {"naive: recompute the last 20 steps": ("exact", rerun),
                 "naive (combiner-logsparse has no window option): recompute the last 20 steps":
                     ("exact", f"{rerun} (combiner-logsparse has no window option to stream with)"),
                 "incremental: whole episode": ("exact", "exact: incremental state over the whole episode")}
    for text, (rollout, method) in described.items():
        new = upgrade_evaluation({"results": [{"rollout": text}]})
        assert (new["rollout"], new["method"]) == (rollout, method)
    flagged = upgrade_evaluation({"exact_readout": True, "activation": "relu", "eval_config": {"naive": True},
                                  "results": [{"rollout": "incremental: whole episode"}]})
    assert flagged["rollout"] == "exact" and flagged["activation"] == "relu"
    assert "exact_readout" not in flagged
    current = {"format": FORMAT, "rollout": "exact", "results": []}
    assert upgrade_evaluation(current) is current


#: training-config fields format 4 added, with the values files without them used (no attention or
#: embedding dropout, a dense MLP)
ADDED_IN_FORMAT4 = {"attention_dropout": 0.0, "embed_dropout": 0.0, "mlp": "mlp", "moe_aux_weight": 0.01}


def test_a_format3_config_without_the_new_fields_resumes_as_a_dense_mlp_without_the_new_dropouts():
    """A run saved before ``mlp``, ``moe_aux_weight`` and the two dropouts existed reads back with the dense
    MLP and no such dropout, so resuming it with today's defaults finds no difference."""
    from agents.config import TrainConfig, config_differences

    saved = dataclasses.asdict(TrainConfig())
    for name in ADDED_IN_FORMAT4:
        del saved[name]
    assert config_differences(upgrade_run_config({"format": 3, **saved}), TrainConfig()) == []
    assert config_differences(saved, TrainConfig()) != []  # without the upgrade it would be refused


def test_format1_configs_and_checkpoints_upgrade_and_newer_formats_are_refused():
    old = {"dataset": "default", "eval_exact": True}
    assert upgrade_run_config(old) == {"dataset": "default", "activation": "gelu", "init": "torch-default",
                                       "init_std": 0.02, "precision": "fp32", "split_long_episodes": False,
                                       "rollout": "streaming", **ADDED_IN_FORMAT4}
    assert upgrade_run_config({"format": 2, "dataset": "d"}) == {"dataset": "d", **ADDED_IN_FORMAT4}
    payload = {"format": "dt-attn/checkpoint/1", "model_config": {"n_layers": 1}, "config": {"seed": 0}}
    up = upgrade_checkpoint(payload)
    assert up["format"] == FORMAT and up["config"]["rollout"] == "streaming"
    assert up["model_config"] == {"init": "torch-default", "init_std": 0.02, "embed_dropout": 0.0,
                                  "transformer": {"n_layers": 1, "activation": "gelu",
                                                  "attention_dropout": 0.0}}
    assert payload["format"] == "dt-attn/checkpoint/1"  # the caller's dict is left alone
    with pytest.raises(ValueError, match="format 5, newer than this dt-attn reads"):
        upgrade_evaluation({"format": 5})
    with pytest.raises(ValueError, match="unknown format 'dt-attn/checkpoint/9'"):
        upgrade_checkpoint({"format": "dt-attn/checkpoint/9"})


def test_format2_model_config_nests_the_block_stack_and_loads():
    """Format 2 saved a flat DTConfig; format 3 holds the block stack's fields under "transformer"."""
    flat = {"state_dim": 11, "act_dim": 3, "context": 4, "max_ep_len": 1000, "embed_dim": 8, "n_layers": 2,
            "n_heads": 2, "dropout": 0.1, "attention": "combiner-fixed", "attention_options": {"span": 4},
            "activation": "relu", "init": "normal", "init_std": 0.02}
    payload = upgrade_checkpoint({"format": 2, "model_config": flat, "config": {"seed": 0}, "model": {}})
    assert payload["format"] == FORMAT and payload["config"] == {"seed": 0, **ADDED_IN_FORMAT4}
    assert payload["model_config"] == {
        "state_dim": 11, "act_dim": 3, "context": 4, "max_ep_len": 1000, "init": "normal", "init_std": 0.02,
        "embed_dropout": 0.0,
        "transformer": {"embed_dim": 8, "n_layers": 2, "n_heads": 2, "dropout": 0.1,
                        "attention": "combiner-fixed", "attention_options": {"span": 4},
                        "activation": "relu", "attention_dropout": 0.0}}
    cfg = DTConfig.from_dict(payload["model_config"])
    assert cfg.transformer == TransformerConfig(embed_dim=8, n_layers=2, n_heads=2,
                                                attention="combiner-fixed", attention_options={"span": 4},
                                                activation="relu")
    model = DecisionTransformer(cfg)
    assert len(model.transformer.blocks) == 2 and model.transformer.blocks[0].attn.span == 4
    # a current checkpoint's model config (dataclasses.asdict) reads back as the same config
    assert DTConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    assert upgrade_checkpoint({"format": 3, "model_config": dataclasses.asdict(cfg),
                               "config": {}})["model_config"] == dataclasses.asdict(cfg)


def test_format3_runs_keep_training_without_the_dropouts_format4_added():
    """A format-3 config or checkpoint lacks attention_dropout and embed_dropout: it trained with neither,
    and reads so whatever today's defaults are (a resume then compares equal settings)."""
    saved = {**dataclasses.asdict(TrainConfig(context=5)), "format": 3}
    del saved["attention_dropout"], saved["embed_dropout"]
    upgraded = upgrade_run_config(saved)
    assert (upgraded["attention_dropout"], upgraded["embed_dropout"]) == (0.0, 0.0)
    same = TrainConfig(context=5, attention_dropout=0.0, embed_dropout=0.0)
    assert config_differences(upgraded, same) == []
    assert config_differences(upgraded, TrainConfig(context=5, embed_dropout=0.1)) == [
        "embed_dropout (saved 0.0, now 0.1)"]
    cfg = DTConfig(state_dim=3, act_dim=2, context=4,
                   transformer=TransformerConfig(embed_dim=8, n_layers=1, attention_dropout=0.2))
    model_config = dataclasses.asdict(cfg)
    del model_config["embed_dropout"], model_config["transformer"]["attention_dropout"]
    up = upgrade_checkpoint({"format": 3, "model_config": model_config, "config": saved})
    model = DecisionTransformer(DTConfig.from_dict(up["model_config"]))
    assert model.embed_drop.p == 0.0 and model.transformer.blocks[0].attn.attention_dropout == 0.0
    assert up["format"] == FORMAT and up["config"] == upgraded


def test_format3_evaluation_stds_read_as_sample_stds():
    """Format 3 wrote population stds over the episodes (ddof = 0); they read as sample stds (ddof = 1),
    exactly: std * sqrt(n / (n - 1)); one episode has none (NaN)."""
    returns = np.array([10.0, 14.0, 30.0])
    old = {"format": 3, "rollout": "exact", "results": [
        {"target": 1.0, "episodes": 3, "return_std": float(returns.std()), "normalized_std": 0.5},
        {"target": 2.0, "episodes": 1, "return_std": 0.0, "normalized_std": 0.0}]}
    new = upgrade_evaluation(old)
    assert new["format"] == FORMAT and old["results"][0]["normalized_std"] == 0.5  # the caller's dict kept
    assert new["results"][0]["return_std"] == pytest.approx(returns.std(ddof=1))
    assert new["results"][0]["normalized_std"] == pytest.approx(0.5 * np.sqrt(3 / 2))
    assert np.isnan(new["results"][1]["return_std"]) and np.isnan(new["results"][1]["normalized_std"])


def test_a_saved_config_json_is_a_valid_config_file(tmp_path):
    """`--config RUN_DIR/config.json` reads a saved training config, its format key included."""
    from experiments.config import config_from_dict

    cfg = TrainConfig(context=7, rollout="streaming")
    assert config_from_dict(TrainConfig, {"format": FORMAT, **dataclasses.asdict(cfg)}) == cfg
    assert config_from_dict(EvalConfig, {"format": FORMAT, "episodes": 3}).episodes == 3
