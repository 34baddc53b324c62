"""Statistics over seeds: rliable's IQM, probability of improvement and performance profiles."""

import numpy as np
import pytest

from experiments.reporting.stats import iqm_ci, performance_profile, probability_of_improvement

pytest.importorskip("rliable", reason="the statistics need the [stats] extra (rliable)")


def test_iqm_of_synthetic_runs_is_the_middle_half_mean_and_its_interval_contains_it():
    scores = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0], [7.0], [100.0]])  # one wild seed
    iqm, lo, hi = iqm_ci(scores, resamples=500)
    assert iqm == pytest.approx(4.5)  # mean of 3, 4, 5, 6: the outlier does not move it
    assert lo <= iqm <= hi < 60  # the mean with the outlier (16) is far above the IQM
    # two tasks: the IQM pools every run of every task
    two = np.hstack([scores[:, :1], scores[:, :1] + 10])
    assert iqm_ci(two, resamples=500)[0] == pytest.approx(np.mean(np.sort(two.ravel())[4:12]))


def test_probability_of_improvement_has_the_known_answers():
    x = np.arange(1.0, 9.0)
    assert probability_of_improvement(x + 100, x, resamples=500)[0] == 1.0
    assert probability_of_improvement(x, x + 100, resamples=500)[0] == 0.0
    assert probability_of_improvement(x, x, resamples=500)[0] == 0.5
    p, lo, hi = probability_of_improvement(x + 4, x, resamples=500)
    assert p == pytest.approx(56 / 64)  # 54 wins and 4 ties of the 64 pairs
    assert lo <= p <= hi
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(np.ones((3, 2)), np.ones((3, 1)))


def test_performance_profile_counts_runs_above_each_threshold():
    prof = performance_profile({"a": np.arange(1.0, 9.0), "b": np.full(8, 10.0)}, np.array([0.0, 4.5, 9.0]),
                               resamples=200)
    np.testing.assert_allclose(prof["a"][0], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(prof["b"][0], [1.0, 1.0, 1.0])
    assert prof["a"][1].shape == (2, 3)


def test_non_finite_scores_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        iqm_ci(np.array([1.0, np.nan]))


def test_iqm_interval_agrees_with_rliables_own_stratified_bootstrap():
    """The vectorized bootstrap draws what rliable's does (runs within each task): same interval up to
    Monte Carlo error."""
    from rliable import library, metrics

    scores = np.random.default_rng(3).normal(30, 8, size=(6, 2))
    _, lo, hi = iqm_ci(scores, resamples=4000)
    _, interval = library.get_interval_estimates({"x": scores},
                                                 lambda m: np.array([metrics.aggregate_iqm(m)]),
                                                 reps=1000, random_state=np.random.RandomState(0))
    assert abs(lo - interval["x"][0, 0]) < 1.5 and abs(hi - interval["x"][1, 0]) < 1.5


def test_probability_of_improvement_agrees_with_rliables_own():
    """The vectorized bootstrap draws what rliable's does (each model's runs within each task): the same point
    estimate, the same interval up to Monte Carlo error."""
    from rliable import library, metrics

    rng = np.random.default_rng(5)
    x, y = rng.normal(32, 6, size=(5, 2)), rng.normal(28, 6, size=(5, 2))
    p, lo, hi = probability_of_improvement(x, y, resamples=4000)
    assert p == pytest.approx(metrics.probability_of_improvement(x, y))
    point, interval = library.get_interval_estimates({"x,y": (x, y)}, metrics.probability_of_improvement,
                                                     reps=1000, random_state=np.random.RandomState(0))
    assert p == pytest.approx(float(np.ravel(point["x,y"])[0]))
    assert abs(lo - interval["x,y"][0, 0]) < 0.06 and abs(hi - interval["x,y"][1, 0]) < 0.06
