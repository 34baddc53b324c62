"""`dt-attn video`: film one episode of a trained policy (python -m experiments.video).

The episode is rolled out as `dt-attn eval` rolls its episodes out (the run's observation filter and
normalization, the model re-run on the last K steps every step) from the initial state of eval's first
episode with the same --seed. MuJoCo renders offscreen through EGL or OSMesa (MUJOCO_GL when set, else
whichever works); a PATH ending in .mp4 is encoded with imageio-ffmpeg (pip install 'dt-attn[video]'), one
ending in .gif with Pillow.
"""

from __future__ import annotations

import argparse
import sys

from experiments.common import run_cli


def _main(args: argparse.Namespace) -> int:
    def body() -> int:
        import torch

        from agents.checkpoint import load_checkpoint, resolve_checkpoint
        from agents.evaluation import load_policy
        from agents.exact_rollout import rollout_settings
        from agents.video import check_video_path, record_video

        if args.threads:
            torch.set_num_threads(args.threads)
        check_video_path(args.out, args.width, args.height)  # before the checkpoint loads
        path = resolve_checkpoint(args.checkpoint)
        payload = load_checkpoint(path)
        settings = rollout_settings(payload)
        target = settings.targets[0] if args.target is None else args.target
        result = record_video(load_policy(payload), settings, args.out, target=target, seed=args.seed,
                              max_steps=args.max_steps, fps=args.fps, width=args.width, height=args.height)
        print(f"{result.frames} frames ({result.length} steps at target {target:g}, episode return "
              f"{result.episode_return:.1f}, {result.fps:g} fps) written to {result.path}")
        return 0

    return run_cli(body)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``dt-attn video``."""
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="run directory (or checkpoint .pt file) written by `dt-attn train`")
    p.add_argument("--out", required=True, metavar="PATH", help="video file to write: .mp4 or .gif")
    p.add_argument("--target", type=float, default=None,
                   help="target return (default: the run's first evaluation target)")
    p.add_argument("--max-steps", type=_positive, default=None,
                   help="cap on episode steps (default: the environment's limit)")
    p.add_argument("--seed", type=int, default=1000, help="environment seed (default: 1000, as eval)")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second (default: real time, the environment's render_fps; at most 50 for a GIF)")
    p.add_argument("--width", type=int, default=480, help="frame width in pixels (>= 16, even for MP4; default: 480)")
    p.add_argument("--height", type=int, default=480, help="frame height in pixels (>= 16, even for MP4; default: 480)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.set_defaults(func=_main)


def register(subparsers) -> None:
    """Add the ``video`` subcommand."""
    p = subparsers.add_parser("video", help="film one episode of a trained policy (MP4 or GIF)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m experiments.video", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(_main(parser.parse_args()))
