"""Video of one episode: an exact rollout in an environment rendered offscreen, written as MP4 or GIF.

The episode is rolled out as evaluation rolls its episodes out: the same observation filter, state
normalization and return scale, the model re-run on the last K steps every step, and the seed of evaluation's
first environment gives the same initial state (evaluation batches several environments through the model,
which can change actions by float rounding, so long episodes may drift apart). MuJoCo renders without a
display through EGL or OSMesa (``offscreen_gl`` finds one that works); MP4 files are encoded by imageio-ffmpeg
(the ``video`` extra), GIFs by Pillow.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.atomic import atomic_path, check_writable
from agents.evaluation import RolloutSettings, check_observation_dim
from agents.model import DecisionTransformer
from agents.rollout import SteppedRollout
from envs import make_vector_env
from envs.errors import optional_import

FORMATS = (".mp4", ".gif")
GIF_MAX_FPS = 50  # GIF players stretch frame delays under 20 ms to 100 ms
OFFSCREEN_BACKENDS = ("egl", "osmesa")
INSTALL_HINT = ("install EGL (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0, or a GPU driver) or "
                "OSMesa (apt-get install libosmesa6), and the PyOpenGL package")
# Renders one frame of a one-geom model: run in a child process, since a failed OpenGL platform cannot be
# swapped for another inside one process.
_PROBE = ("import mujoco\n"
          "xml = \"<mujoco><worldbody><geom size='0.1'/></worldbody></mujoco>\"\n"
          "m = mujoco.MjModel.from_xml_string(xml)\n"
          "with mujoco.Renderer(m, 16, 16) as r:\n"
          "    r.update_scene(mujoco.MjData(m))\n"
          "    r.render()\n")


class VideoError(ValueError):
    """This machine cannot write the video asked for (no offscreen OpenGL, no encoder, a bad path)."""


@dataclass
class VideoResult:
    """What ``record_video`` wrote."""

    path: Path
    frames: int  # rendered: the reset state, then one per step
    episode_return: float
    length: int  # environment steps
    fps: float


@functools.cache
def _probe(backend: str) -> str | None:
    """None when MuJoCo renders offscreen with MUJOCO_GL=backend, else the last line of the failure."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], check=False,
                              env={**os.environ, "MUJOCO_GL": backend}, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        return "timed out"
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def offscreen_gl() -> str:
    """The OpenGL backend MuJoCo renders offscreen with here: MUJOCO_GL when set, else the first of egl and
    osmesa that works, which is then set in MUJOCO_GL for this process."""
    requested = os.environ.get("MUJOCO_GL")
    if requested:
        failure = _probe(requested)
        if failure is None:
            return requested
        raise VideoError(f"MuJoCo cannot render offscreen with MUJOCO_GL={requested} ({failure}); install "
                         "that backend's library or unset MUJOCO_GL to try "
                         f"{' and '.join(OFFSCREEN_BACKENDS)}")
    failures = []
    for backend in OFFSCREEN_BACKENDS:
        failure = _probe(backend)
        if failure is None:
            os.environ["MUJOCO_GL"] = backend  # gymnasium's renderer reads it when it builds its context
            return backend
        failures.append(f"{backend}: {failure}")
    raise VideoError(f"no offscreen OpenGL for MuJoCo rendering ({'; '.join(failures)}): {INSTALL_HINT}")


def check_video_path(path: str | Path, width: int, height: int, flag: str = "--out") -> Path:
    """The output path (given as ``flag``), refused before any frame is rendered unless it ends in .mp4 or
    .gif, can be written and has its encoder installed; the frame size, refused unless encodable."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise VideoError(f"video path {path} must end in {' or '.join(FORMATS)}")
    even = path.suffix.lower() == ".mp4"  # H.264 stores colour at half resolution
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 16 or (even and value % 2):
            mp4 = ", even for MP4," if even else ""
            raise VideoError(f"video {name} must be an int >= 16{mp4} got {value!r}")
    check_writable(path, flag)
    if even:
        optional_import("imageio_ffmpeg", "video", "writing MP4 (a .gif needs only imageio)")
    return path


def _open_writer(path: str, fps: float):
    """An imageio writer for ``path`` (format from its suffix) at ``fps`` frames per second."""
    imageio = optional_import("imageio.v2", "video", "writing a video")
    if path.lower().endswith(".gif"):
        return imageio.get_writer(path, mode="I", duration=1000.0 / fps, loop=0)
    optional_import("imageio_ffmpeg", "video", "writing MP4 (a .gif needs only imageio)")
    # macro_block_size 2: keep the frame size as rendered (H.264 needs it even) instead of padding it to 16
    return imageio.get_writer(path, fps=fps, macro_block_size=2)


@contextmanager
def _atomic_video(path: Path, fps: float) -> Iterator:
    """A writer to a temp file beside ``path`` that replaces ``path`` only once the video is complete."""
    with atomic_path(path, keep_suffix=True) as tmp:
        writer = _open_writer(str(tmp), fps)
        try:
            yield writer
        finally:
            writer.close()


def filming_env(settings: RolloutSettings, seed: int, width: int, height: int):
    """A one-env VectorEnv of the run's environment that renders RGB frames through the model's "track"
    camera, which follows the body (gymnasium's v4 HalfCheetah otherwise films from a fixed point that the
    cheetah runs out of within seconds)."""
    return make_vector_env(settings.env_id, 1, seed, observe=settings.observe, render_mode="rgb_array",
                           width=width, height=height, camera_name="track")


def record_video(
    model: DecisionTransformer,
    settings: RolloutSettings,
    path: str | Path,
    *,
    target: float,
    seed: int = 1000,
    max_steps: int | None = None,
    fps: float | None = None,
    width: int = 480,
    height: int = 480,
    device: str | torch.device = "cpu",
) -> VideoResult:
    """Roll ``model`` out for one episode conditioned on ``target`` in ``settings``' environment seeded
    ``seed`` (where evaluation's first episode starts), render every state and write the frames to ``path``
    (.mp4 or .gif) at ``fps`` (default: real time, at most 50 for a GIF)."""
    path = check_video_path(path, width, height)
    if fps is not None and not fps > 0:
        raise VideoError(f"fps must be positive, got {fps!r}")
    offscreen_gl()
    venv = filming_env(settings, seed, width, height)
    try:
        check_observation_dim(model, venv, settings.env_id, settings.observe)
        env = venv.envs[0]
        if fps is None:
            fps = float(env.metadata.get("render_fps") or 30)
            if path.suffix.lower() == ".gif":
                fps = min(fps, GIF_MAX_FPS)
        rollout = SteppedRollout(model, venv, target=target, state_mean=settings.state_mean,
                                 state_std=settings.state_std, rtg_scale=settings.rtg_scale, seed=seed,
                                 max_steps=max_steps or settings.max_episode_steps, device=device)
        with _atomic_video(path, fps) as writer:
            writer.append_data(env.render())
            frames = 1
            # a finished episode is not reset before the loop ends: the last frame is its end
            for _ in rollout:
                writer.append_data(env.render())
                frames += 1
    finally:
        venv.close()
    return VideoResult(path=path, frames=frames, episode_return=float(rollout.returns[0]),
                       length=int(rollout.lengths[0]), fps=fps)
