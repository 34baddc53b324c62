"""The shared stand-in datasets load by path and by id, and match the numbers in their README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from envs import load_dataset, normalized_score
from envs.spread import format_std, sample_std_from_population

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
README = SHARED / "README.md"


def _readme_rows() -> list[tuple]:
    if not README.is_file():
        return []
    rows = []
    pattern = re.compile(
        r"^\| (\S+-standin) \| (\S+) \| ([\d,]+) \| (\d+) \| ([-\d.]+) ± ([-\d.]+) \| "
        r"([-\d.]+) / ([-\d.]+) \| "
        r"([-\d.]+) / ([-\d.]+) \|$"
    )
    for line in README.read_text().splitlines():
        m = pattern.match(line.strip())
        if m:
            rows.append(m.groups())
    return rows


ROWS = _readme_rows()


def test_readme_table_found():
    if not README.is_file():
        pytest.skip(f"{SHARED} not present")
    assert len(ROWS) >= 5


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_standin_summary_matches_readme(row):
    name, env_id, transitions, episodes, mean, std, rmin, rmax, nmean, nmax = row
    path = SHARED / f"{name}.hdf5"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    ds = load_dataset(path)
    s = ds.stats()
    assert s.transitions == int(transitions.replace(",", ""))
    assert s.episodes == int(episodes)
    for value, text in ((s.return_mean, mean), (s.return_min, rmin), (s.return_max, rmax)):
        assert f"{value:.1f}" == text
    # the shared README gives the population std (ddof = 0) to 0.1; the suite's is the sample std
    factor = sample_std_from_population(1.0, s.episodes)
    assert abs(s.return_std - sample_std_from_population(float(std), s.episodes)) <= 0.05 * factor + 1e-9
    scores, _ = normalized_score(ds.env_name, [s.return_mean, s.return_max])
    assert (f"{scores[0]:.1f}", f"{scores[1]:.1f}") == (nmean, nmax)
    assert ds.env_id == env_id
    summary = ds.summary()
    assert f"{s.transitions:,} transitions, {s.episodes:,} episodes" in summary
    assert f"mean {mean} ± {format_std(s.return_std)}, min {rmin}, max {rmax}" in summary
    assert "stand-in" in ds.label and "D4RL" not in ds.label and "D4RL" not in summary


def test_standin_short_id_resolves_to_shared_folder(monkeypatch):
    monkeypatch.delenv("DT_ATTN_STANDIN_DIR", raising=False)
    path = SHARED / "hopper-medium-replay-standin.hdf5"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    ds = load_dataset("hopper-medium-replay-standin")
    assert ds.source == str(path)
    assert ds.label == "hopper medium-replay stand-in"
    assert (ds.stats().transitions, ds.stats().episodes) == (60000, 382)
