"""`dt-attn train --preset NAME`: defaults < preset < --config file < flags; the preset is printed and
saved."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

from agents.config import TRAIN_PRESETS, TrainConfig, config_differences
from agents.trainer import default_run_dir
from experiments.cli import main as cli_main
from experiments.commands.sweep import SweepConfig
from experiments.config import add_config_arguments, config_from_args, config_from_dict

QUICK = {"attention": "cosformer", "embed_dim": 64, "n_layers": 2, "batch_size": 32, "steps": 1500,
         "warmup_steps": 150, "lr": 6e-4, "eval_episodes": 10, "threads": 1}


def parse(argv: list[str], cls: type = TrainConfig):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


def test_quick_is_the_small_configuration_and_paper_states_the_defaults():
    assert TRAIN_PRESETS["quick"] == QUICK
    assert parse(["--preset", "quick"]) == TrainConfig(preset="quick", **QUICK)
    assert parse(["--preset", "paper"]) == TrainConfig(preset="paper")  # the defaults, stated explicitly
    paper = TRAIN_PRESETS["paper"]
    assert paper["attention"] == "softmax" and paper["context"] == 20 and paper["steps"] == 100_000
    assert TrainConfig(**paper) == TrainConfig()


def test_defaults_then_preset_then_config_file_then_flags(tmp_path):
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"preset": "quick", "steps": 200, "embed_dim": 32, "lr": 3e-4}))
    cfg = parse(["--config", str(file), "--steps", "100"])
    assert cfg.preset == "quick"
    assert cfg.steps == 100  # the flag over the file
    assert (cfg.embed_dim, cfg.lr) == (32, 3e-4)  # the file over the preset
    assert (cfg.attention, cfg.batch_size, cfg.warmup_steps) == ("cosformer", 32, 150)  # the preset
    assert (cfg.context, cfg.grad_clip) == (20, 0.25)  # the defaults
    # a --preset flag names the preset the file's values lie on
    cfg = parse(["--config", str(file), "--preset", "paper"])
    assert (cfg.preset, cfg.attention, cfg.n_layers, cfg.steps, cfg.embed_dim) == ("paper", "softmax", 3, 200,
                                                                                   32)


def test_an_unknown_preset_is_one_line_naming_the_choices(capsys):
    assert cli_main(["train", "--preset", "fast", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid training config value(s): preset='fast' (must be one of quick, "
                          "paper, or unset)") and "Traceback" not in err


def test_the_preset_is_a_label_for_resume_and_the_run_folder():
    """A run started from a preset and one given the same values by flags are the same run."""
    by_preset = config_from_dict(TrainConfig, {"preset": "quick"})
    by_flags = TrainConfig(**QUICK)
    assert default_run_dir(by_preset) == default_run_dir(by_flags)
    assert config_differences(dataclasses.asdict(by_preset), by_flags) == []
    assert config_differences(dataclasses.asdict(by_preset), dataclasses.replace(by_flags, lr=1e-3)) == [
        "lr (saved 0.0006, now 0.001)"]


def test_a_sweep_takes_the_preset_for_its_cells_base():
    cfg = parse(["--preset", "quick", "--steps", "10", "--attentions", "softmax"], SweepConfig)
    assert cfg.train == TrainConfig(preset="quick", **{**QUICK, "steps": 10})


def test_train_prints_and_saves_the_preset(tmp_path, capsys):
    preset, run = "quick", tmp_path / "run"
    tiny = ["--embed-dim", "16", "--n-layers", "1", "--batch-size", "4", "--steps", "2", "--warmup-steps",
            "1", "--eval-episodes", "0", "--checkpoint-every", "2", "--run-dir", str(run)]
    assert cli_main(["train", "--preset", preset, *tiny]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"^  preset += '{preset}'$", printed, re.MULTILINE)
    saved = json.loads((run / "config.json").read_text())
    assert saved["preset"] == preset and saved["attention"] == "cosformer" and saved["lr"] == 6e-4
    assert saved["embed_dim"] == 16 and saved["threads"] == 1
    assert config_from_dict(TrainConfig, saved).preset == preset  # config.json reads back as a config file
