"""Segment sampling: padding at episode starts, returns-to-go, timesteps, length-proportional draws."""

import numpy as np
import pytest

from agents.sampler import SegmentSampler, mean_segment_targets, returns_to_go


def _sampler(lengths, context=4, seed=0, max_ep_len=1000):
    obs = [np.full((n, 2), i, dtype=np.float32) + np.arange(n, dtype=np.float32)[:, None] / 1000
           for i, n in enumerate(lengths)]
    act = [np.full((n, 1), 0.5, dtype=np.float32) for n in lengths]
    rew = [np.ones(n, dtype=np.float32) for n in lengths]
    return SegmentSampler(obs, act, rew, context, np.zeros(2), np.ones(2), rtg_scale=10.0,
                          max_ep_len=max_ep_len, seed=seed)


def test_returns_to_go():
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 2.0, 3.0])), [6.0, 5.0, 3.0])


def test_segments_are_left_padded_at_episode_start():
    s = _sampler([3, 50], context=5)
    b = s.sample(512)
    assert b.states.shape == (512, 5, 2) and b.actions.shape == (512, 5, 1) and b.rtg.shape == (512, 5, 1)
    for i in range(512):
        pad = b.pad_mask[i].numpy()
        n_pad = pad.sum()
        assert not pad[n_pad:].any() and pad[:n_pad].all()  # padding is a prefix
        t = b.timesteps[i].numpy()
        real_t = t[n_pad:]
        assert (np.diff(real_t) == 1).all()  # consecutive steps of one episode
        if n_pad:
            assert real_t[0] == 0  # padding only where the episode started inside the window
            assert (b.states[i, :n_pad] == 0).all() and (b.rtg[i, :n_pad] == 0).all()
        ep = round(b.states[i, -1, 0].item())
        length = [3, 50][ep]
        # rtg of unit rewards: (length - t) / rtg_scale
        np.testing.assert_allclose(b.rtg[i, n_pad:, 0].numpy(), (length - real_t) / 10.0, rtol=1e-6)


def test_episodes_drawn_in_proportion_to_length():
    s = _sampler([100, 300], context=1, seed=1)
    b = s.sample(20000)
    frac_second = (b.states[:, -1, 0].round() == 1).float().mean().item()
    assert abs(frac_second - 0.75) < 0.02


def test_sampling_is_seeded_and_state_restorable():
    a, b = _sampler([10, 20], seed=3), _sampler([10, 20], seed=3)
    assert np.array_equal(a.sample(8).states.numpy(), b.sample(8).states.numpy())
    state = a.get_rng_state()
    first = a.sample(8).states.numpy()
    a.set_rng_state(state)
    assert np.array_equal(first, a.sample(8).states.numpy())


def test_timesteps_clamped_to_embedding_size():
    s = _sampler([30], context=3, max_ep_len=10)
    assert s.sample(64).timesteps.max() <= 9


def test_empty_dataset_is_rejected():
    with pytest.raises(ValueError, match="no episodes"):
        SegmentSampler([], [], [], 2, np.zeros(1), np.ones(1), 1.0, 10, 0)


@pytest.mark.parametrize("context", [1, 4, 20, 100])
def test_mean_segment_targets_is_the_samplers_mean_unpadded_length(context):
    lengths = [3, 10, 50]
    brute = np.mean([min(context, t + 1) for n in lengths for t in range(n)])
    assert mean_segment_targets(lengths, context) == pytest.approx(brute, rel=1e-12)
    real = (~_sampler(lengths, context=context).sample(20_000).pad_mask).sum(dim=1).float().mean().item()
    assert real == pytest.approx(brute, rel=0.03)


def test_mean_segment_targets_rejects_no_episodes():
    with pytest.raises(ValueError, match="non-empty episode"):
        mean_segment_targets([], 20)
