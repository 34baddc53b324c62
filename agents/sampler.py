"""Training segments for the Decision Transformer, sampled from a list of episodes.

Every transition is equally likely to end a segment (so episodes are drawn in proportion
to their length); a segment holds the K steps up to and including that transition and is
left-padded (with a mask) when the episode started less than K steps before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    """One training batch; ``pad_mask`` is True at padded (left) steps."""

    states: torch.Tensor  # (B, K, S) normalized
    actions: torch.Tensor  # (B, K, A)
    rtg: torch.Tensor  # (B, K, 1) scaled returns-to-go
    timesteps: torch.Tensor  # (B, K) long
    pad_mask: torch.Tensor  # (B, K) bool

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor to ``device``."""
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """Undiscounted reward sums from each step to the episode's end."""
    return np.cumsum(rewards[::-1], dtype=np.float64)[::-1].astype(np.float32)


def mean_segment_targets(lengths: Sequence[int], context: int) -> float:
    """Mean number of real (unpadded) steps, i.e. action targets, in a ``context``-step segment when
    every transition is equally likely to end it: the mean over transitions of min(K, t + 1).

    Episodes shorter than K make long-context segments mostly padding: hopper's medium-replay
    stand-in (episodes of 157 steps on average) holds about 110 targets per K=1000 segment.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0 or lengths.sum() == 0:
        raise ValueError("mean_segment_targets needs at least one non-empty episode")
    k = min(context, int(lengths.max()))
    short = np.minimum(lengths, k)
    # sum over t < L of min(K, t + 1) = 1 + ... + min(L, K), then K for each later step
    total = short * (short + 1) // 2 + (lengths - short) * k
    return float(total.sum() / lengths.sum())


class SegmentSampler:
    """Samples left-padded K-step segments from episodes with a seeded numpy Generator."""

    def __init__(
        self,
        observations: Sequence[np.ndarray],
        actions: Sequence[np.ndarray],
        rewards: Sequence[np.ndarray],
        context: int,
        state_mean: np.ndarray,
        state_std: np.ndarray,
        rtg_scale: float,
        max_ep_len: int,
        seed: int,
    ) -> None:
        if not observations:
            raise ValueError("cannot sample segments from a dataset with no episodes")
        lengths = np.array([len(o) for o in observations])
        self.context = context
        self.mean_targets = mean_segment_targets(lengths, context)  # real steps per segment, on average
        self.obs = ((np.concatenate(observations) - state_mean) / state_std).astype(np.float32)
        self.actions = np.concatenate(actions).astype(np.float32)
        rtg = np.concatenate([returns_to_go(np.asarray(r)) for r in rewards])
        self.rtg = (rtg / rtg_scale).astype(np.float32)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.episode_start = np.repeat(starts, lengths)
        self.timestep = np.minimum(np.arange(len(self.obs)) - self.episode_start, max_ep_len - 1)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.obs)

    def sample(self, batch_size: int, part: slice | None = None) -> Batch:
        """A batch of ``batch_size`` segments, or its ``part`` alone: a DDP rank draws the whole batch's end
        points from the shared stream and keeps its own slice, so the ranks together see the one-process
        batch."""
        end = self.rng.integers(0, len(self.obs), size=batch_size)
        if part is not None:
            end = end[part]
        idx = end[:, None] - np.arange(self.context - 1, -1, -1)[None, :]
        pad = idx < self.episode_start[end][:, None]
        idx = np.where(pad, end[:, None], idx)
        keep = ~pad
        return Batch(
            states=torch.from_numpy(self.obs[idx] * keep[..., None]),
            actions=torch.from_numpy(self.actions[idx] * keep[..., None]),
            rtg=torch.from_numpy(self.rtg[idx] * keep)[..., None],
            timesteps=torch.from_numpy(self.timestep[idx] * keep),
            pad_mask=torch.from_numpy(pad),
        )

    def get_rng_state(self) -> dict:
        """The generator's state, for checkpoints."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        """Restore the generator's state from a checkpoint."""
        self.rng.bit_generator.state = state
