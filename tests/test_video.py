"""Video of an episode: the exact rollout evaluation plays, rendered offscreen, written as MP4 or GIF."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HOPPER

from agents import video as video_mod
from agents.config import TrainConfig
from agents.model import DecisionTransformer, DTConfig
from agents.rollout import SteppedRollout, run_episodes
from agents.trainer import Trainer
from agents.video import VideoError, filming_env, offscreen_gl, record_video
from dt_attn import TransformerConfig
from envs import make_vector_env
from experiments.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gl(monkeypatch):
    """The offscreen OpenGL backend, or a skip naming what is missing; MUJOCO_GL is restored afterwards."""
    monkeypatch.setenv("MUJOCO_GL", os.environ.get("MUJOCO_GL", ""))  # undone at teardown
    if not os.environ["MUJOCO_GL"]:
        monkeypatch.delenv("MUJOCO_GL")  # offscreen_gl picks one and sets it; teardown removes it
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg (pip install 'dt-attn[video]')")
    try:
        return offscreen_gl()
    except VideoError as exc:
        pytest.skip(f"no offscreen OpenGL here: {exc}")


def policy(context: int = 3) -> DecisionTransformer:
    torch.manual_seed(0)
    return DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context=context,
                                        transformer=TransformerConfig(embed_dim=16, n_layers=2, dropout=0.0,
                                                                      attention="cosformer")))


def trained_run(run: Path, attention: str) -> Path:
    """A run folder of a two-step training (K=3, 16 wide) on the embedded dataset, not evaluated."""
    Trainer(TrainConfig(dataset="default", attention=attention, context=3, embed_dim=16, n_layers=1,
                        batch_size=4, steps=2, warmup_steps=1, checkpoint_every=2, log_every=1,
                        eval_episodes=0, run_dir=str(run), threads=1), progress=False).train()
    return run


def test_exact_rollout_plays_evaluations_exact_episodes():
    model = policy()
    envs = make_vector_env("Hopper-v4", 2, 5)  # run_episodes plans the fast exact rollout by default
    ref = run_episodes(model, envs, target=1800.0, state_mean=HOPPER.state_mean, state_std=HOPPER.state_std,
                       rtg_scale=1000.0, seed=5, max_steps=12)
    envs.close()
    envs = make_vector_env("Hopper-v4", 2, 5)
    rollout = SteppedRollout(model, envs, target=1800.0, state_mean=HOPPER.state_mean,
                             state_std=HOPPER.state_std, rtg_scale=1000.0, seed=5, max_steps=12)
    steps = list(rollout)
    envs.close()
    assert [s.window for s in steps[:4]] == [1, 2, 3, 3] and len(steps) == rollout.lengths.max()
    np.testing.assert_array_equal(rollout.lengths, ref.lengths)
    np.testing.assert_allclose(rollout.returns, ref.returns, rtol=1e-5)  # float32: reuse reorders sums


def test_mp4_holds_one_frame_per_state_and_replays_evaluations_episode(tmp_path, gl):
    import imageio.v2 as imageio

    model = policy()
    result = record_video(model, HOPPER, tmp_path / "ep.mp4", target=1800.0, seed=11, max_steps=9, width=64,
                          height=48)
    envs = make_vector_env("Hopper-v4", 1, 11)
    rollout = SteppedRollout(model, envs, target=1800.0, state_mean=HOPPER.state_mean,
                             state_std=HOPPER.state_std, rtg_scale=1000.0, seed=11, max_steps=9)
    list(rollout)
    envs.close()
    assert result.length == rollout.lengths[0] and result.frames == result.length + 1
    assert result.episode_return == pytest.approx(rollout.returns[0], rel=1e-12)
    assert result.fps == 125.0  # Hopper's real time: one frame per 8 ms control step
    reader = imageio.get_reader(result.path)
    assert reader.count_frames() == result.frames
    frames = [f for f in reader]
    reader.close()
    assert frames[0].shape == (48, 64, 3) and np.ptp(frames[0]) > 0  # a picture, not a blank
    assert not list(tmp_path.glob(".*"))  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert result.path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_gif_and_the_video_command(tmp_path, gl, capsys):
    import imageio.v3 as iio

    run = trained_run(tmp_path / "run", "softmax")
    gif = tmp_path / "out" / "ep.gif"
    assert cli_main(["video", "--checkpoint", str(run), "--out", str(gif), "--max-steps", "6", "--fps", "20",
                     "--width", "32", "--height", "32", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    frames = int(printed.split()[0])
    assert f"frames ({frames - 1} steps at target 1800" in printed and 2 <= frames <= 7
    # Pillow merges identical consecutive frames into one longer frame: the total duration is what survives
    durations = [iio.immeta(gif, index=i)["duration"] for i in range(iio.improps(gif, index=None).shape[0])]
    assert sum(durations) == frames * 50
    assert np.ptp(iio.imread(gif, index=0)) > 0

    assert cli_main(["video", "--checkpoint", str(run), "--out", str(tmp_path / "ep.avi")]) == 2
    assert "must end in .mp4 or .gif" in capsys.readouterr().err
    assert cli_main(["video", "--checkpoint", str(run), "--out", str(tmp_path / "ep.mp4"), "--width",
                     "33"]) == 2
    assert "video width must be an int >= 16, even for MP4, got 33" in capsys.readouterr().err


def test_a_failed_recording_keeps_the_previous_file(tmp_path, gl, monkeypatch):
    path = tmp_path / "ep.mp4"
    path.write_bytes(b"the previous video")

    class Dies(SteppedRollout):
        def __iter__(self):
            yield from list(super().__iter__())[:2]
            raise RuntimeError("policy crashed")

    monkeypatch.setattr(video_mod, "SteppedRollout", Dies)
    with pytest.raises(RuntimeError, match="policy crashed"):
        record_video(policy(), HOPPER, path, target=1800.0, max_steps=4, width=32, height=32)
    assert path.read_bytes() == b"the previous video" and [p.name for p in tmp_path.iterdir()] == ["ep.mp4"]


def test_missing_offscreen_gl_is_one_line_naming_what_to_install(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(video_mod, "_probe", lambda backend: f"{backend} library not found")
    with pytest.raises(VideoError) as err:
        offscreen_gl()
    msg = str(err.value)
    assert "\n" not in msg and "egl: egl library not found; osmesa: osmesa library not found" in msg
    assert "libosmesa6" in msg and "libegl1" in msg
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    with pytest.raises(VideoError, match="cannot render offscreen with MUJOCO_GL=glfw .*unset MUJOCO_GL"):
        offscreen_gl()


def test_eval_video_films_the_first_evaluated_episode(tmp_path, gl, capsys):
    import imageio.v2 as imageio

    run = trained_run(tmp_path / "run", "cosformer")
    clip = tmp_path / "clips" / "ep.mp4"
    assert cli_main(["eval", "--checkpoint", str(run), "--episodes", "2", "--envs", "2", "--targets", "1800",
                     "--max-steps", "7", "--threads", "1", "--video", str(clip)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "eval.json").read_text())
    first_length = result["results"][0]["lengths"][0]
    assert f"video of episode 1 at target 1800 ({first_length + 1} frames" in printed
    reader = imageio.get_reader(clip)
    assert reader.count_frames() == first_length + 1  # the initial state and one frame per step
    assert reader.get_data(0).shape == (480, 480, 3)
    reader.close()
    # a bad path is refused before any episode runs: the earlier result stays as it was
    before = (run / "eval.json").read_bytes()
    assert cli_main(["eval", "--checkpoint", str(run), "--video", str(tmp_path / "ep.webm")]) == 2
    assert "must end in .mp4 or .gif" in capsys.readouterr().err
    assert (run / "eval.json").read_bytes() == before


def test_the_camera_follows_a_cheetah_that_ran_far(gl):
    cheetah = dataclasses.replace(HOPPER, env_id="HalfCheetah-v4", env_name="halfcheetah")
    venv = filming_env(cheetah, seed=0, width=64, height=64)
    try:
        env = venv.envs[0].unwrapped
        env.render()  # the first frame places the camera
        qpos = env.data.qpos.copy()
        qpos[0] = 30.0  # 30 m down the track, far outside a fixed camera's view
        env.set_state(qpos, env.data.qvel.copy())
        frame = env.render().astype(int)
    finally:
        venv.close()
    body = (frame[..., 0] - frame[..., 2] > 60).sum()  # the cheetah is tan; floor and sky are not
    assert body > 40
