"""The product speaks of the product: no machine paths and no development history in tracked files."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Absolute paths of a particular machine (examples in the docs use relative paths or /shared/...).
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|Users|tmp|mnt)/[\w.-]+")
# Numbered work periods and issue numbers: history, which belongs in CHANGELOG.md or nowhere.
HISTORY = re.compile(r"\bsession[ -]?\d+\b|\bwork[ -]period[ -]?\d+\b|\bissue #?\d+\b", re.IGNORECASE)
EXEMPT = ("tests/", "CHANGELOG.md")


def tracked_text_files() -> list[Path]:
    """Tracked files outside the exempt ones that read as UTF-8 text."""
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in names.splitlines():
        path = ROOT / name
        if name.startswith(EXEMPT) or not path.is_file():
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary: plots, datasets, checkpoints
        files.append(path)
    return files


def offending_lines(pattern: re.Pattern) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for path in tracked_text_files()
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line)]


def test_no_tracked_file_holds_a_machine_path():
    assert offending_lines(MACHINE_PATH) == []


def test_no_tracked_file_speaks_of_work_sessions_or_issue_numbers():
    assert offending_lines(HISTORY) == []


def test_the_patterns_catch_what_they_are_for():
    assert MACHINE_PATH.search("see /work/runs_s9/hopper.sh") and MACHINE_PATH.search("cd /tmp/snap11")
    assert not MACHINE_PATH.search("dt-attn sweep --out-dir /shared/runs/study")
    assert not MACHINE_PATH.search("runs/tmp/x") and not MACHINE_PATH.search("https://example.org/home/x")
    assert HISTORY.search("measured in session 13") and HISTORY.search("see issue #21")
    assert not HISTORY.search("sessions of training") and not HISTORY.search("an issue with the data")
