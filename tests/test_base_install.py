"""The base install (``pip install -e .``, no extras) runs every core command: each optional package is
hidden from a subprocess (a None entry in ``sys.modules``), and every subcommand's help still works,
the core commands still run, and a command that truly needs the hidden package exits 2 with one line naming
the extra that installs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import COMMAND_MODULES
from experiments.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
#: Every package an extra brings (pyproject.toml's optional-dependencies), by its import name; scipy comes
#: with rliable. (imageio is not among them: gymnasium[mujoco], a base dependency, needs it.)
OPTIONAL = ("scipy", "rliable", "arch", "pandas", "ray", "transformers", "imageio_ffmpeg", "minari")
TINY = ["--dataset", "default", "--attention", "softmax", "--context", "2", "--embed-dim", "8", "--n-layers",
        "1", "--batch-size", "4", "--warmup-steps", "1", "--threads", "1", "--log-every", "1000"]

# Makes the packages named in argv[1] (comma-separated) unimportable, as absent ones are: a None entry in
# sys.modules makes `import NAME` raise ModuleNotFoundError and importlib.util.find_spec(NAME) return None.
HIDE = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
"""
# `dt-attn ARGV...` (argv[2:]) with those packages hidden.
HIDING_CLI = HIDE + "from experiments.cli import main\nsys.exit(main(sys.argv[2:]))\n"
# `dt-attn --help`, then `dt-attn SUB --help` for every subcommand, each line "SUB EXIT-CODE".
EVERY_HELP = HIDE + """
from contextlib import redirect_stdout
import io
from experiments.cli import build_parser, main
def code(argv):
    try:
        with redirect_stdout(io.StringIO()):
            return main(argv)
    except SystemExit as exc:
        return exc.code
print("-", code(["--help"]))
subs = build_parser()._subparsers._group_actions[0].choices
for sub in sorted(subs):
    print(sub, code([sub, "--help"]))
"""


def hidden_cli(hidden: tuple[str, ...], *argv: str, cwd: Path = ROOT,
               program: str = HIDING_CLI) -> subprocess.CompletedProcess:
    """`dt-attn ARGV` (or another ``program``) in a subprocess that cannot import ``hidden``."""
    return subprocess.run([sys.executable, "-c", program, ",".join(hidden), *argv], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base") / "run"
    assert cli_main(["train", *TINY, "--steps", "2", "--eval-episodes", "0", "--run-dir", str(folder)]) == 0
    return folder


def test_cli_start_up_imports_no_optional_package():
    code = ("import sys; from experiments.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.strip() == "[]"


def test_every_help_works_with_every_extra_hidden():
    result = hidden_cli(OPTIONAL, program=EVERY_HELP)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    codes = dict(line.split() for line in result.stdout.splitlines())
    assert {"-", "train", "eval", "data", "sweep", "report", "attend", "video", "parity"} <= set(codes)
    assert len(codes) >= len(COMMAND_MODULES) + 1  # aliases too
    assert set(codes.values()) == {"0"}, codes


def test_train_evaluate_and_report_run_with_every_extra_hidden(tmp_path):
    run = tmp_path / "run"
    trained = hidden_cli(OPTIONAL, "train", *TINY, "--steps", "3", "--eval-episodes", "1", "--eval-envs", "1",
                         "--run-dir", str(run), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (run / "eval.json").is_file()
    evaluated = hidden_cli(OPTIONAL, "eval", "--checkpoint", str(run), "--episodes", "1", "--envs", "1",
                           "--max-steps", "5", "--output", str(tmp_path / "again.json"))
    assert evaluated.returncode == 0 and (tmp_path / "again.json").is_file(), evaluated.stderr
    reported = hidden_cli(OPTIONAL, "report", str(run), "--out", str(tmp_path / "report"))
    assert reported.returncode == 0, reported.stderr
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert 'no performance profiles: performance profiles needs the rliable package' in markdown
    assert 'pip install -e ".[stats]"' in markdown
    swept = hidden_cli(OPTIONAL, "sweep", "--datasets", "default", "--attentions", "softmax", "--contexts",
                       "2", "--seeds", "0", "--steps", "2", "--eval-episodes", "1", "--embed-dim", "8",
                       "--n-layers", "1", "--batch-size", "4", "--jobs", "1",
                       "--out-dir", str(tmp_path / "sweep"))
    assert swept.returncode == 0, swept.stderr


@pytest.mark.parametrize("hidden, argv, extra", [
    (("ray",), ["sweep", "--backend", "ray", "--datasets", "default", "--contexts", "2", "--seeds", "0"],
     "ray"),
    (("transformers",), ["parity", "--quick", "--models", "huggingface"], "bench"),
    (("minari",), ["data", "mujoco/hopper/medium-v0"], "minari"),
    (("imageio_ffmpeg",), ["video", "--out", "ep.mp4"], "video"),
    (("imageio_ffmpeg",), ["eval", "--episodes", "1", "--envs", "1", "--max-steps", "3", "--video", "ep.mp4"],
     "video"),
])
def test_a_command_that_needs_a_hidden_extra_exits_2_naming_it(tmp_path, tiny_run, hidden, argv, extra):
    if argv[0] in ("video", "eval"):
        argv = [argv[0], "--checkpoint", str(tiny_run), *argv[1:]]
    if argv[0] in ("sweep", "parity"):
        argv = [*argv, "--out-dir", str(tmp_path / "out")]
    result = hidden_cli(hidden, *argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f'pip install -e ".[{extra}]"' in lines[0], result.stderr
    assert not (tmp_path / "ep.gif").exists() and not (tmp_path / "ep.mp4").exists()
    assert not (tiny_run / "eval.json").exists()  # nothing was evaluated before the refusal
