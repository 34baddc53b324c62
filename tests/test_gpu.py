"""CUDA paths: training (fp32 and bf16), the rollouts, the attention, training and context benchmarks, and DDP
with nccl.

Marked ``gpu`` and skipped where torch sees no CUDA device; ``experiments/gpu_check.sh`` runs them, then the
benchmarks, on a machine with one (``pytest -m gpu tests``).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_agent_e2e import _tiny_policy, tiny

from agents.config import EvalConfig
from agents.evaluation import evaluate
from agents.model import DecisionTransformer, DTConfig
from agents.rollout import plan_rollout, rerun_plan, run_episodes
from agents.sampler import SegmentSampler
from agents.trainer import Trainer, action_loss, training_autocast
from dt_attn import TransformerConfig, available_attentions
from envs import make_vector_env

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (torch sees none)")]
CUDA = torch.device("cuda")


def _batch_and_model(attention: str):
    rng = np.random.default_rng(0)
    lengths = (30, 50, 40)
    sampler = SegmentSampler([rng.normal(size=(n, 3)).astype(np.float32) for n in lengths],
                             [rng.uniform(-1, 1, size=(n, 2)).astype(np.float32) for n in lengths],
                             [rng.normal(size=n).astype(np.float32) for n in lengths],
                             8, np.zeros(3), np.ones(3), 100.0, 1000, 0)
    torch.manual_seed(0)
    opts = {"span": 5} if attention.startswith("combiner") else {}
    model = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, context=8,
                                         transformer=TransformerConfig(embed_dim=32, n_layers=2, n_heads=2,
                                                                       dropout=0.0, attention=attention,
                                                                       attention_options=opts))).train()
    return sampler.sample(16), model


def _grads(model, batch, precision: str = "fp32"):
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    with training_autocast(precision, device):
        loss = action_loss(model, batch.to(device))
    loss.backward()
    return loss.detach().cpu(), {n: p.grad.detach().cpu() for n, p in model.named_parameters()}


@pytest.mark.parametrize("attention", available_attentions())
def test_loss_and_gradients_on_cuda_match_the_cpu(attention):
    batch, model = _batch_and_model(attention)
    loss, grads = _grads(model, batch)
    model.to(CUDA)
    assert all(p.device.type == "cuda" for p in model.parameters())
    cuda_loss, cuda_grads = _grads(model, batch)
    torch.testing.assert_close(cuda_loss, loss, rtol=1e-4, atol=1e-6)
    for name, g in grads.items():
        torch.testing.assert_close(cuda_grads[name], g, rtol=1e-3, atol=1e-5, msg=name)
    # bf16 matrix multiplies under CUDA autocast: close to float32, not equal
    bf16_loss, bf16_grads = _grads(model, batch, "bf16")
    assert 0 < abs(bf16_loss - loss) / loss < 2e-2
    flat, flat_bf16 = (torch.cat([g.flatten() for g in gs.values()]) for gs in (grads, bf16_grads))
    assert ((flat_bf16 - flat).norm() / flat.norm()).item() < 5e-2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("attention", available_attentions())
def test_training_and_both_rollouts_run_on_cuda(tmp_path, attention, precision):
    cfg = tiny(tmp_path, attention=attention, device="cuda", precision=precision, dropout=0.1)
    trainer = Trainer(cfg, progress=False)
    summary = trainer.train()
    assert summary["steps"] == 6 and summary["device"].startswith("cuda") and summary["peak_memory_mb"] > 0
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in trainer.model.parameters())
    results = {}
    for rollout in ("exact", "streaming"):
        out = tmp_path / f"eval-{rollout}.json"
        results[rollout] = evaluate(EvalConfig(checkpoint=cfg.run_dir, episodes=2, envs=2, targets=[1800.0],
                                               max_steps=15, rollout=rollout, device="cuda", output=str(out)),
                                    progress=False, print_table=False)
        rec = results[rollout]["results"][0]
        assert rec["episodes"] == 2 and np.isfinite(rec["returns"]).all()
    assert results["exact"]["rollout"] == "exact"
    assert results["exact"]["method"].startswith("exact: the last 4 steps")


@pytest.mark.parametrize("attention", available_attentions())
def test_cuda_rollouts_match_the_cpu_and_each_other(attention):
    """Whole-context (K >= steps) rollouts on CUDA, through the incremental state and re-running the model,
    agree with each other and with the CPU."""
    context = steps = 12
    returns = {}
    for device in ("cpu", "cuda"):
        model = _tiny_policy(attention, context, n_layers=2).to(device)
        for name, plan in (("incremental", plan_rollout(model, "exact", steps)),
                           ("rerun", rerun_plan(model))):
            envs = make_vector_env("Hopper-v4", 2, 7)
            try:
                res = run_episodes(model, envs, target=1800.0, state_mean=np.zeros(11), state_std=np.ones(11),
                                   rtg_scale=1000.0, seed=7, max_steps=steps, plan=plan, device=device)
            finally:
                envs.close()
            returns[device, name] = res.returns
    for key, value in returns.items():
        np.testing.assert_allclose(value, returns["cpu", "incremental"], rtol=0, atol=1e-4, err_msg=str(key))


def test_attention_benchmark_on_cuda(tmp_path):
    from experiments.benchmarks.attention import COMMAND

    out = tmp_path / "bench"
    assert COMMAND.main(["--quick", "--device", "cuda", "--tokens", "64", "256", "--isolate", "false",
                 "--out-dir", str(out)]) == 0
    with open(out / "fwd_bwd.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["median_s"]]
    assert rows and all(r["device"] == "cuda" and float(r["median_s"]) > 0 for r in rows)
    assert all(r["memory_method"].startswith("cuda max_memory_allocated") for r in rows)
    assert json.loads((out / "bench.json").read_text())["device"] == "cuda"


def test_training_and_context_benchmarks_on_cuda(tmp_path):
    from experiments.benchmarks import context, training

    assert training.COMMAND.main(["--quick", "--device", "cuda", "--attentions", "softmax", "cosformer",
                                  "--precisions", "fp32", "bf16", "--compare-hf", "false",
                                  "--out-dir", str(tmp_path / "training")]) == 0
    summary = json.loads((tmp_path / "training" / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and summary["gpu"]
    assert len(summary["throughput"]) == 4 and all(r["steps_per_s"] > 0 for r in summary["throughput"])
    assert context.COMMAND.main(["--quick", "--device", "cuda", "--attentions", "softmax", "cosformer",
                                 "--out-dir", str(tmp_path / "context")]) == 0
    summary = json.loads((tmp_path / "context" / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and len(summary["context"]) == 4
    assert all(r["steps_per_s"] > 0 and r["memory_method"] == "cuda max_memory_allocated"
               for r in summary["context"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with nccl needs two GPUs (one per process)")
def test_two_gpu_ddp_with_nccl_trains_the_one_process_model(tmp_path):
    from test_distributed import config, torchrun, weights

    ddp = config(tmp_path / "ddp", steps=4, checkpoint_every=2, dropout=0.0, device="cuda")
    out = torchrun(ddp, tmp_path)
    assert "2 processes (DDP), global batch 7" in out and "cuda:0" in out
    one = Trainer(config(tmp_path / "one", steps=4, checkpoint_every=2, dropout=0.0, device="cuda"),
                  progress=False)
    one.train()
    for name, w in weights(tmp_path / "ddp").items():
        torch.testing.assert_close(w, one.model.state_dict()[name].cpu(), rtol=1e-4, atol=1e-6, msg=name)
