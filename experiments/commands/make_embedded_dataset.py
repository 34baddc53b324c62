"""Write the small embedded default dataset (envs/data/) from the hopper medium-replay stand-in.

Selection rule: split the source into episodes, rank them by return (highest first, ties by
position), keep every k-th rank starting with the best (k=2 by default: about half the
episodes, with the same spread of returns), and write the kept episodes in their original
order. A maintainer's tool, not a `dt-attn` subcommand; run it from the repository root:

    python -m experiments.commands.make_embedded_dataset [--source FILE] [--out FILE] [--every K]
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from agents.fieldtypes import check_field_types, check_rules
from envs.catalog import EMBEDDED_FILE, standin_dir
from envs.readers import read_hdf5
from envs.spread import sample_std
from experiments.common import Command

SOURCE_NAME = "hopper-medium-replay-standin.hdf5"
KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def select_episodes(returns: np.ndarray, every: int) -> np.ndarray:
    """Indices (in original order) of every ``every``-th episode by return rank, best first."""
    order = np.argsort(-returns, kind="stable")
    return np.sort(order[::every])


def write_readme(out_dir: Path, info: dict) -> None:
    """envs/data/README.md stating where the sample comes from."""
    source = f"(source: mean {info['source_return_mean']:.1f}, max {info['source_return_max']:.1f})"
    text = f"""# Embedded default dataset (stand-in sample)

`{info['file']}` is what `load_dataset("default")` (alias `hopper-medium-replay-standin-sample`)
loads when no other data is at hand. It is a **stand-in** sample, NOT D4RL data: never report
scores on it as D4RL results.

* Source: `{info['source_file']}` from the shared stand-in datasets (built with D4RL's recipe
  in gymnasium's Hopper-v4; see `shared/datasets/README.md`), SHA-256 `{info['source_sha256']}`.
* Selection: {info['selection_rule']}
* Content: {info['episodes']} of {info['source_episodes']} episodes, {info['transitions']:,} transitions;
  return mean {info['return_mean']:.1f} ± {info['return_std']:.1f}, min {info['return_min']:.1f},
  max {info['return_max']:.1f} {source}.
* Layout: D4RL HDF5 keys {', '.join(KEYS)} (gzip; no next_observations), file attributes
  `env_id` = Hopper-v4, `provenance`, `source_file`, `source_sha256`, `selection_rule`.
* Recreate with `python -m experiments.commands.make_embedded_dataset` (deterministic).
"""
    (out_dir / "README.md").write_text(text)


@dataclass
class EmbedConfig:
    """Where the sample comes from and goes, and how many episodes it keeps."""

    source: str | None = field(default=None, metadata={
        "help": f"stand-in file to sample (default: {SOURCE_NAME} in the stand-in folder, "
                "$DT_ATTN_STANDIN_DIR)"})
    out: str | None = field(default=None, metadata={
        "help": "file to write (default: the package's embedded file)"})
    every: int = field(default=2, metadata={"help": "keep every k-th episode by return rank"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "embedded dataset config", {"every": (self.every >= 1, ">= 1")})


def run(cfg: EmbedConfig) -> int:
    """Build the sample file and its README."""
    source = Path(cfg.source) if cfg.source else standin_dir() / SOURCE_NAME
    out = Path(cfg.out) if cfg.out else EMBEDDED_FILE
    if not source.is_file():
        raise FileNotFoundError(f"source {source} not found (set $DT_ATTN_STANDIN_DIR or pass --source)")
    episodes, attrs = read_hdf5(source)
    returns = np.array([ep.total_return for ep in episodes])
    keep = select_episodes(returns, cfg.every)
    chosen = [episodes[i] for i in keep]
    rule = (f"episodes split at terminals|timeouts, ranked by return (highest first, ties by position); "
            f"one in every {cfg.every} ranks kept, starting with the best (ranks 0, {cfg.every}, "
            f"{2 * cfg.every}, ...); kept episodes written in their original order")
    digest = sha256(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w", track_order=False) as f:
        for key in KEYS:
            data = np.concatenate([getattr(ep, key) for ep in chosen])
            f.create_dataset(key, data=data, compression="gzip", compression_opts=9, shuffle=True,
                             track_times=False)
        f.attrs["env_id"] = str(attrs.get("env_id", "Hopper-v4"))
        f.attrs["provenance"] = (f"stand-in sample (not D4RL data) of {source.name}, "
                                 f"sha256 {digest}; {rule}")
        f.attrs["source_file"] = source.name
        f.attrs["source_sha256"] = digest
        f.attrs["selection_rule"] = rule
        f.attrs["episode_indices"] = json.dumps(keep.tolist())
    kept = returns[keep]
    info = {"file": out.name, "source_file": source.name, "source_sha256": digest, "selection_rule": rule,
                "episodes": len(chosen), "source_episodes": len(episodes),
                "transitions": sum(len(e) for e in chosen), "return_mean": kept.mean(),
                "return_std": sample_std(kept), "return_min": kept.min(), "return_max": kept.max(),
                "source_return_mean": returns.mean(), "source_return_max": returns.max()}
    write_readme(out.parent, info)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.2f} MB): {info['episodes']} episodes, {info['transitions']:,} "
          f"transitions, return mean {info['return_mean']:.1f} ± {info['return_std']:.1f}")
    return 0


COMMAND = Command("make-embedded-dataset", "write the embedded default dataset from the hopper stand-in",
                  EmbedConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
