"""Progress bars: throttled in log files, and a rollout's bar leaves its result unchanged."""

import io
import itertools

import numpy as np
import torch

from agents.model import DecisionTransformer, DTConfig
from agents.progress import LOG_FILE_INTERVAL_S, progress_bar
from agents.rollout import run_episodes
from dt_attn import TransformerConfig
from envs import make_vector_env


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_redraws_rarely_in_a_log_file_and_often_in_a_terminal():
    log, term = io.StringIO(), _Terminal()
    with progress_bar(total=10, file=log) as to_log, progress_bar(total=10, file=term) as to_term:
        assert to_log.mininterval == LOG_FILE_INTERVAL_S
        assert to_term.mininterval < 1.0
    assert progress_bar(total=1, file=log, mininterval=2.0).mininterval == 2.0  # an explicit choice wins


def _redraws(stream, updates: int = 300) -> int:
    """Carriage returns written by a bar updated ``updates`` times, one simulated second apart."""
    bar = progress_bar(total=updates, file=stream, desc="train")
    clock = itertools.count(bar.last_print_t + 1.0, 1.0)
    bar._time = lambda: float(next(clock))  # tqdm reads its clock through this attribute
    for _ in range(updates):
        bar.update()
    bar.close()
    assert f"{updates}/{updates}" in stream.getvalue()
    return stream.getvalue().count("\r")


def test_log_file_bar_writes_a_line_per_interval_not_per_update():
    assert _redraws(io.StringIO()) <= 300 / LOG_FILE_INTERVAL_S + 2
    assert _redraws(_Terminal()) >= 100


def test_rollout_with_a_progress_bar_returns_the_same_episodes(capsys):
    torch.manual_seed(0)
    model = DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context=4, max_ep_len=30,
                                         transformer=TransformerConfig(embed_dim=16, n_layers=1, dropout=0.0,
                                                                       attention="cosformer"))).eval()

    def roll(progress):
        envs = make_vector_env("Hopper-v4", 2, 3)
        try:
            return run_episodes(model, envs, target=1800.0, state_mean=np.zeros(11), state_std=np.ones(11),
                                rtg_scale=1000.0, seed=3, max_steps=30, progress=progress)
        finally:
            envs.close()

    quiet = roll(None)
    assert capsys.readouterr().err == ""
    shown = roll("target 1800, episodes 1-2")
    assert "target 1800, episodes 1-2" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet.returns, shown.returns)
    np.testing.assert_array_equal(quiet.lengths, shown.lengths)
