"""One standard deviation everywhere: the sample std (ddof = 1), NaN and "–" for a single value."""

import math

import numpy as np
import pytest

from agents.results import format_eval_table, target_record
from envs.spread import MISSING, format_std, sample_std, sample_std_from_population


def test_sample_std_divides_by_n_minus_one_and_one_value_has_none():
    assert sample_std([2.0, 4.0]) == pytest.approx(math.sqrt(2.0))  # (1 + 1) / (2 - 1)
    assert sample_std(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert math.isnan(sample_std([5.0])) and math.isnan(sample_std([]))
    assert (format_std(math.nan), format_std(1.25), format_std(1.25, 2)) == (MISSING, "1.2", "1.25")


def test_a_population_std_converts_exactly_to_the_sample_std():
    values = np.array([3.0, 7.0, 8.0, 20.0, 1.5])
    assert sample_std_from_population(values.std(), values.size) == pytest.approx(values.std(ddof=1))
    assert math.isnan(sample_std_from_population(0.0, 1))


def _result(records):
    return {"dataset_label": "d", "env_id": "Hopper-v4", "observe": "full", "attention": "softmax",
            "context": 20, "train_seed": 0, "train_steps": 5, "eval_seed": 1000, "score_reference": "D4RL",
            "method": "exact", "results": records}


def test_the_eval_summary_gives_the_sample_std_of_its_episodes():
    """Two episodes returning 100 and 300: std 141.4 (ddof = 1), not 100 (ddof = 0)."""
    returns = np.array([100.0, 300.0])
    rec = target_record(1800.0, returns, np.array([10, 30]), returns / 10, 1.0, 40)
    assert rec["return_std"] == pytest.approx(141.42, abs=0.01)
    assert rec["normalized_std"] == pytest.approx(14.142, abs=0.001)
    table = format_eval_table(_result([rec]))
    assert "200.0 ± 141.4" in table and "20.0 ± 14.1" in table


def test_the_eval_summary_of_one_episode_shows_no_std():
    rec = target_record(1800.0, np.array([100.0]), np.array([10]), np.array([10.0]), 1.0, 10)
    assert math.isnan(rec["return_std"]) and math.isnan(rec["normalized_std"])
    as_read = {**rec, "return_std": None, "normalized_std": None}  # eval.json holds NaN as null
    for record in (rec, as_read):
        table = format_eval_table(_result([record]))
        assert "100.0 ± –" in table and "10.0 ± –" in table and "nan" not in table


def test_a_point_of_one_seed_is_drawn_without_a_band():
    """A learning curve of one seed has no std; its points keep their line, with a band of zero width."""
    from experiments.reporting.plots import _std_band

    assert _std_band({"normalized_mean": 30.0, "normalized_std": math.nan}) == (30.0, 30.0, 30.0)
    assert _std_band({"normalized_mean": 30.0, "normalized_std": 2.0}) == (30.0, 28.0, 32.0)
