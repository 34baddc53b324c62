"""The model-parity benchmark: quick mode trains both models with one trainer and writes its table."""

import json

import numpy as np
import pytest
import torch

from experiments.benchmarks.parity import HuggingFaceDT, ParityConfig, cell_config, run_parity, summarize
from experiments.reporting.stats import bootstrap_diff_ci, bootstrap_mean_ci

pytest.importorskip("transformers", reason="the parity benchmark needs the [bench] extra (transformers)")


def test_quick_parity_trains_both_models_alike_and_writes_the_table(tmp_path):
    cfg = ParityConfig(datasets=["default"], models=["dt-attn", "huggingface"], seeds=[0, 1], quick=True,
                       out_dir=str(tmp_path), bootstrap=200)
    rows = run_parity(cfg, progress=False)
    assert {(r["model"], r["seeds"]) for r in rows} == {("dt-attn", 2), ("huggingface", 2)}
    assert len(rows) == 4  # two targets per model
    table = (tmp_path / "parity.md").read_text()
    assert "exact rollout" in table and "huggingface" in table and "quick mode" in table
    saved = json.loads((tmp_path / "parity.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows))
    for r in rows:
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        assert (r["diff_to_hf"] is None) == (r["model"] == "huggingface")
    cell = json.loads((tmp_path / "runs" / "default" / "huggingface" / "s0"
                       / "result.json").read_text())
    assert cell["steps"] == 20 and all(t["rollout"].startswith("exact") for t in cell["targets"])
    # the same sampler stream and budget: both models' run configs differ only in their run folder
    mine = cell_config(cfg, "default", "dt-attn", 0)
    hf = cell_config(cfg, "default", "huggingface", 0)
    assert {k for k, v in vars(mine).items() if vars(hf)[k] != v} == {"run_dir"}
    # a rerun skips the finished cells: same rows without training
    assert run_parity(cfg, progress=False) == rows


def test_huggingface_adapter_reads_left_padding_as_its_attention_mask():
    """A left-padded segment predicts the same last action as its unpadded tail (HF masks the padding)."""
    from agents.data import prepare_data

    data = prepare_data("default", None, "full", 0)
    cfg = cell_config(ParityConfig(quick=True), "default", "huggingface", 0)
    torch.manual_seed(0)
    model = HuggingFaceDT(cfg, data).eval()
    g = torch.Generator().manual_seed(0)
    k, real = cfg.context, 5
    s = torch.randn(1, real, data.state_dim, generator=g)
    a = torch.rand(1, real, data.act_dim, generator=g)
    r = torch.randn(1, real, 1, generator=g)
    t = torch.arange(real)[None]
    pad = k - real

    def padded(x):
        return torch.cat((x.new_zeros((1, pad) + x.shape[2:]), x), dim=1)

    mask = torch.arange(k)[None] < pad
    with torch.no_grad():
        full = model(padded(s), padded(a), padded(r), padded(t), mask, last_only=True)
        tail = model(s, a, r, t, None, last_only=True)
    assert full.shape == (1, 1, data.act_dim)
    torch.testing.assert_close(full, tail, atol=1e-5, rtol=1e-5)


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_agreement():
    values = np.array([10.0, 12.0, 14.0, 16.0, 18.0])
    lo, hi = bootstrap_mean_ci(values, 2000)
    assert lo < 14.0 < hi and hi - lo < 8.0
    assert bootstrap_mean_ci(np.array([3.0, 3.0, 3.0]), 500) == (3.0, 3.0)
    dlo, dhi = bootstrap_diff_ci(values + 20, values, 2000)
    assert dlo < 20.0 < dhi
    assert dlo > 10.0  # a 20-point gap with this spread is clearly resolved
    with pytest.raises(ValueError):
        bootstrap_mean_ci(np.array([]))


def test_summarize_groups_seeds_per_cell_and_differences_to_huggingface():
    def result(model, seed, score):
        return {"dataset": "d", "dataset_label": "D", "env_id": "Hopper-v4", "model": model, "seed": seed,
                "episodes": 10, "steps": 5, "parameters": 1,
                "targets": [{"target": 1800.0, "normalized_mean": score}]}

    rows = summarize([result("huggingface", 0, 10.0), result("huggingface", 1, 20.0),
                      result("dt-attn", 0, 30.0), result("dt-attn", 1, 40.0)], 500)
    by_model = {r["model"]: r for r in rows}
    assert by_model["dt-attn"]["mean"] == 35.0 and by_model["huggingface"]["mean"] == 15.0
    assert by_model["dt-attn"]["std"] == pytest.approx(np.std([30.0, 40.0], ddof=1))
    assert by_model["dt-attn"]["diff_to_hf"] == 20.0
    assert by_model["dt-attn"]["diff_ci_low"] <= 20.0 <= by_model["dt-attn"]["diff_ci_high"]


def test_one_seed_has_no_std_in_the_parity_table():
    """A cell of one seed has no sample std: NaN in the rows, "–" in the table (it was 0.0)."""
    from experiments.benchmarks.parity import format_table

    result = {"dataset": "d", "dataset_label": "D", "env_id": "Hopper-v4", "model": "dt-attn", "seed": 0,
              "episodes": 10, "steps": 5, "parameters": 1,
              "targets": [{"target": 1800.0, "normalized_mean": 30.0}]}
    (row,) = summarize([result], 100)
    assert np.isnan(row["std"])
    assert "| 30.0 ± – |" in format_table([row], ParityConfig(quick=True))


def test_our_dropouts_make_their_own_cells_and_huggingface_keeps_its_own(tmp_path):
    """--attention-dropout / --embed-dropout set this project's models (own run folders and table label);
    huggingface's cells are the same for every ablation."""
    from experiments.benchmarks.parity import cell_dir, model_label

    plain = ParityConfig(quick=True, out_dir=str(tmp_path))
    both = ParityConfig(quick=True, out_dir=str(tmp_path), attention_dropout=0.1, embed_dropout=0.2)
    assert model_label(both, "dt-attn") == "dt-attn-adrop0.1-edrop0.2"
    assert model_label(ParityConfig(embed_dropout=0.1), "dt-attn-torch-init") == "dt-attn-torch-init-edrop0.1"
    assert model_label(plain, "dt-attn") == "dt-attn" and model_label(both, "huggingface") == "huggingface"
    mine = cell_config(both, "default", "dt-attn", 0)
    assert (mine.attention_dropout, mine.embed_dropout, mine.dropout) == (0.1, 0.2, 0.1)
    assert cell_dir(both, "default", "dt-attn", 0) != cell_dir(plain, "default", "dt-attn", 0)
    hf = cell_config(both, "default", "huggingface", 0)
    assert (hf.attention_dropout, hf.embed_dropout) == (0.0, 0.0)
    assert cell_dir(both, "default", "huggingface", 0) == cell_dir(plain, "default", "huggingface", 0)
    with pytest.raises(ValueError, match="attention_dropout"):
        ParityConfig(attention_dropout=1.0)


def test_a_quick_dropout_ablation_trains_its_own_cell_and_writes_its_own_table(tmp_path):
    cfg = ParityConfig(datasets=["default"], models=["dt-attn"], seeds=[0], quick=True, out_dir=str(tmp_path),
                       bootstrap=50, attention_dropout=0.1, embed_dropout=0.1)
    (row, _) = run_parity(cfg, progress=False)
    assert row["model"] == "dt-attn-adrop0.1-edrop0.1" and np.isnan(row["std"])  # one seed: no std
    assert "| dt-attn-adrop0.1-edrop0.1 |" in (tmp_path / "parity-adrop0.1-edrop0.1.md").read_text()
    assert not (tmp_path / "parity.md").exists()
    saved = json.loads((tmp_path / "runs" / "default" / "dt-attn-adrop0.1-edrop0.1" / "s0" / "config.json")
                       .read_text())
    assert (saved["attention_dropout"], saved["embed_dropout"], saved["dropout"]) == (0.1, 0.1, 0.1)


def test_the_ablation_summarizes_beside_the_shared_huggingface_cells():
    def result(model, label, score):
        return {"dataset": "d", "dataset_label": "D", "env_id": "Hopper-v4", "model": model, "label": label,
                "seed": 0, "episodes": 10, "steps": 5, "parameters": 1,
                "targets": [{"target": 1800.0, "normalized_mean": score}]}

    rows = summarize([result("huggingface", "huggingface", 10.0), result("dt-attn", "dt-attn", 7.0),
                      result("dt-attn", "dt-attn-adrop0.1", 9.0)], 100)
    assert [r["model"] for r in rows] == ["dt-attn", "dt-attn-adrop0.1", "huggingface"]
    assert [r["diff_to_hf"] for r in rows] == [-3.0, -1.0, None]
