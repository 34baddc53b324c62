"""`dt-attn video`: film one episode of a trained policy (python -m experiments.commands.video).

The episode is rolled out as `dt-attn eval` rolls its episodes out (the run's observation filter and
normalization, the model re-run on the last K steps every step) from the initial state of eval's first
episode with the same --seed. MuJoCo renders offscreen through EGL or OSMesa (MUJOCO_GL when set, else
whichever works); a PATH ending in .mp4 is encoded with imageio-ffmpeg (pip install 'dt-attn[video]'), one
ending in .gif with Pillow.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from agents.fieldtypes import check_field_types, check_rules
from experiments.common import Command


@dataclass
class VideoConfig:
    """Which policy to film, and how."""

    checkpoint: str = field(default="", metadata={
        "metavar": "RUN", "help": "run directory (or checkpoint .pt file) written by `dt-attn "
                                  "train` (required)"})
    out: str = field(default="", metadata={"metavar": "PATH", "help": "video file to write: .mp4 "
                                                                      "or .gif (required)"})
    target: float | None = field(default=None, metadata={
        "help": "target return (default: the run's first evaluation target)"})
    max_steps: int | None = field(default=None, metadata={
        "help": "cap on episode steps (default: the environment's limit)"})
    seed: int = field(default=1000, metadata={"help": "environment seed (as eval's first episode)"})
    fps: float | None = field(default=None, metadata={
        "help": "frames per second (default: real time, the environment's render_fps; at most 50 for a GIF)"})
    width: int = field(default=480, metadata={"help": "frame width in pixels (>= 16, even for MP4)"})
    height: int = field(default=480, metadata={"help": "frame height in pixels (>= 16, even for MP4)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "video config", {
            "max_steps": (self.max_steps is None or self.max_steps >= 1, ">= 1"),
            "threads": (self.threads >= 0, ">= 0 (0 = torch's default)"),
        })


def run(cfg: VideoConfig) -> int:
    """Film one episode of the checkpoint's policy into ``cfg.out``."""
    import torch

    from agents.checkpoint import load_checkpoint, resolve_checkpoint
    from agents.evaluation import load_policy, rollout_settings
    from agents.video import check_video_path, record_video

    if not cfg.checkpoint or not cfg.out:
        raise ValueError("--checkpoint RUN and --out PATH are required")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_video_path(cfg.out, cfg.width, cfg.height)  # before the checkpoint loads
    path = resolve_checkpoint(cfg.checkpoint)
    payload = load_checkpoint(path)
    settings = rollout_settings(payload)
    target = settings.targets[0] if cfg.target is None else cfg.target
    result = record_video(load_policy(payload), settings, cfg.out, target=target, seed=cfg.seed,
                          max_steps=cfg.max_steps, fps=cfg.fps, width=cfg.width, height=cfg.height)
    print(f"{result.frames} frames ({result.length} steps at target {target:g}, episode return "
          f"{result.episode_return:.1f}, {result.fps:g} fps) written to {result.path}")
    return 0


COMMAND = Command("video", "film one episode of a trained policy (MP4 or GIF)", VideoConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
