"""Mixed-precision training (``--precision bf16``): bfloat16 matrix multiplies under autocast, the
attention, weights and loss in float32, and the precision carried into results and reports."""

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from test_agent_e2e import tiny
from test_report import as_format1, write_run

from agents import trainer as trainer_mod
from agents.config import EvalConfig, config_differences
from agents.evaluation import evaluate
from agents.model import DecisionTransformer, DTConfig
from agents.results import format_eval_table
from agents.sampler import SegmentSampler
from agents.trainer import Trainer, action_loss, training_autocast
from agents.upgrade import upgrade_run_config
from dt_attn import available_attentions
from dt_attn.transformer import Block, TransformerConfig
from experiments.reporting.report import build_report

CPU = torch.device("cpu")


@pytest.mark.parametrize("attention", available_attentions("qkv"))
def test_block_runs_linear_layers_in_bf16_and_the_attention_in_float32(attention):
    torch.manual_seed(0)
    block = Block(TransformerConfig(embed_dim=16, n_heads=2, attention=attention, dropout=0.0))
    seen = []
    block.attn.register_forward_pre_hook(
        lambda mod, args: seen.append((args[0].dtype, torch.is_autocast_enabled("cpu"))))
    qkv_out = []
    block.qkv.register_forward_hook(lambda mod, args, out: qkv_out.append(out.dtype))
    x = torch.randn(2, 12, 16)
    with training_autocast("bf16", CPU):
        y = block(x)
    assert qkv_out == [torch.bfloat16] and seen == [(torch.float32, False)]
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    with torch.no_grad():
        ref = block(x)  # float32 throughout
    assert qkv_out[-1] == torch.float32 and seen[-1] == (torch.float32, False)
    err = ((y.detach() - ref).norm() / ref.norm()).item()
    assert 0 < err < 2e-2  # bf16 changed the numbers, a little


@pytest.mark.parametrize("attention", available_attentions())
def test_bf16_loss_and_gradients_stay_close_to_float32(attention):
    rng = np.random.default_rng(0)
    lengths = (30, 50, 40)
    sampler = SegmentSampler([rng.normal(size=(n, 3)).astype(np.float32) for n in lengths],
                             [rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for n in lengths],
                             [rng.normal(size=n).astype(np.float32) for n in lengths],
                             8, np.zeros(3), np.ones(3), 100.0, 1000, 0)
    torch.manual_seed(0)
    model = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, context=8,
                                         transformer=TransformerConfig(embed_dim=32, n_layers=2, n_heads=1,
                                                                       dropout=0.0,
                                                                       attention=attention))).train()
    batch = sampler.sample(16)
    grads = {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with training_autocast(precision, CPU):
            loss = action_loss(model, batch)
        assert loss.dtype == torch.float32
        loss.backward()
        grads[precision] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    (l32, g32), (l16, g16) = grads["fp32"], grads["bf16"]
    assert l16 != l32 and abs(l16 - l32) / l32 < 5e-3
    assert 0 < ((g16 - g32).norm() / g32.norm()).item() < 5e-2


def test_bf16_run_is_deterministic_keeps_float32_weights_and_records_its_precision(tmp_path):
    runs = {}
    for name, precision in (("a", "bf16"), ("b", "bf16"), ("fp32", "fp32")):
        cfg = tiny(tmp_path, attention="softmax", precision=precision, run_dir=str(tmp_path / name))
        runs[name] = Trainer(cfg, progress=False)
        runs[name].train()
    a, b, full = (runs[n].model.state_dict() for n in ("a", "b", "fp32"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights, also in bf16
    assert all(v.dtype == torch.float32 for v in a.values() if v.is_floating_point())
    assert any(not torch.equal(a[k], full[k]) for k in a)  # bf16 arithmetic did change the training
    assert json.loads((tmp_path / "a" / "config.json").read_text())["precision"] == "bf16"
    for name, note in (("a", "steps in bf16 |"), ("fp32", "steps |")):
        result = evaluate(EvalConfig(checkpoint=str(tmp_path / name), episodes=1, envs=1, targets=[1800.0],
                                     max_steps=5), progress=False, print_table=False)
        assert result["train_precision"] == runs[name].cfg.precision
        assert f"6 {note}" in format_eval_table(result)


def test_precision_is_validated_and_must_match_on_resume(tmp_path):
    with pytest.raises(ValueError, match=r"precision='fp16'.*must be one of fp32, bf16"):
        tiny(tmp_path, precision="fp16")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        training_autocast("fp16", CPU)
    Trainer(tiny(tmp_path, steps=2), progress=False).train()
    with pytest.raises(ValueError, match=r"precision \(saved 'fp32', now 'bf16'\)"):
        Trainer(tiny(tmp_path, steps=4, precision="bf16", resume=True), progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["precision"], saved["format"]  # a format-1 run from before the field trained in float32
    saved = upgrade_run_config(saved)
    assert config_differences(saved, tiny(tmp_path)) == []
    assert config_differences(saved,
                              tiny(tmp_path, precision="bf16")) == ["precision (saved 'fp32', now 'bf16')"]


def test_bf16_warns_on_a_cpu_without_native_bfloat16(monkeypatch):
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16 support.*slower than fp32"):
        training_autocast("bf16", CPU)
    monkeypatch.setattr(trainer_mod, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training_autocast("bf16", CPU)


def test_bf16_is_refused_on_a_gpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match="cuda:0 has no bfloat16 support.*use --precision fp32"):
        training_autocast("bf16", torch.device("cuda:0"))


def test_report_keeps_bf16_and_fp32_runs_apart(tmp_path):
    old = write_run(tmp_path / "old", "softmax", 20, 0, {1800.0: 10.0})
    as_format1(old / "eval.json", late=True)
    record = json.loads((old / "eval.json").read_text())
    del record["train_precision"]  # a format-1 run from before the field: a float32 run
    (old / "eval.json").write_text(json.dumps(record))
    new = write_run(tmp_path / "new", "softmax", 20, 1, {1800.0: 30.0})
    ev = json.loads((new / "eval.json").read_text())
    (new / "eval.json").write_text(json.dumps({**ev, "train_precision": "bf16"}))
    report = build_report([tmp_path / "old", tmp_path / "new"], tmp_path / "out", reference_fn=None,
                          plots=False)
    with open(report.files["cells_csv"]) as f:
        cells = {r["precision"]: r for r in csv.DictReader(f)}
    assert set(cells) == {"fp32", "bf16"}
    assert cells["bf16"]["seeds"] == "1" and float(cells["bf16"]["normalized_mean"]) == 30.0
    assert cells["bf16"]["label"] == "softmax bf16" and cells["fp32"]["label"] == "softmax fp32"
    with open(report.files["runs_csv"]) as f:
        assert sorted(r["precision"] for r in csv.DictReader(f)) == ["bf16", "fp32"]
