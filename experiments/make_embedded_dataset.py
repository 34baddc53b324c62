"""Write the small embedded default dataset (envs/data/) from the hopper medium-replay stand-in.

Selection rule: split the source into episodes, rank them by return (highest first, ties by
position), keep every k-th rank starting with the best (k=2 by default: about half the
episodes, with the same spread of returns), and write the kept episodes in their original
order. Usage: python experiments/make_embedded_dataset.py [--source FILE] [--out FILE] [--every K]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from envs.catalog import EMBEDDED_FILE, standin_dir
from envs.readers import read_hdf5

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
    text = f"""# Embedded default dataset (stand-in sample)

`{info['file']}` is what `load_dataset("default")` (alias `hopper-medium-replay-standin-sample`)
loads when no other data is at hand. It is a **stand-in** sample, NOT D4RL data: never report
scores on it as D4RL results.

* Source: `{info['source_file']}` from the shared stand-in datasets (built with D4RL's recipe
  in gymnasium's Hopper-v4; see `shared/datasets/README.md`), SHA-256 `{info['source_sha256']}`.
* Selection: {info['selection_rule']}
* Content: {info['episodes']} of {info['source_episodes']} episodes, {info['transitions']:,} transitions;
  return mean {info['return_mean']:.1f} ± {info['return_std']:.1f}, min {info['return_min']:.1f},
  max {info['return_max']:.1f} (source: mean {info['source_return_mean']:.1f}, max {info['source_return_max']:.1f}).
* Layout: D4RL HDF5 keys {', '.join(KEYS)} (gzip; no next_observations), file attributes
  `env_id` = Hopper-v4, `provenance`, `source_file`, `source_sha256`, `selection_rule`.
* Recreate with `python experiments/make_embedded_dataset.py` (deterministic).
"""
    (out_dir / "README.md").write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Build the sample file and its README."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=standin_dir() / SOURCE_NAME)
    ap.add_argument("--out", type=Path, default=EMBEDDED_FILE)
    ap.add_argument("--every", type=int, default=2, help="keep every k-th episode by return rank")
    args = ap.parse_args(argv)
    if not args.source.is_file():
        print(f"error: source {args.source} not found (set $DT_ATTN_STANDIN_DIR or pass --source)", file=sys.stderr)
        return 1
    episodes, attrs = read_hdf5(args.source)
    returns = np.array([ep.total_return for ep in episodes])
    keep = select_episodes(returns, args.every)
    chosen = [episodes[i] for i in keep]
    rule = (f"episodes split at terminals|timeouts, ranked by return (highest first, ties by position); "
            f"one in every {args.every} ranks kept, starting with the best (ranks 0, {args.every}, "
            f"{2 * args.every}, ...); kept episodes written in their original order")
    digest = sha256(args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(args.out, "w", track_order=False) as f:
        for key in KEYS:
            data = np.concatenate([getattr(ep, key) for ep in chosen])
            f.create_dataset(key, data=data, compression="gzip", compression_opts=9, shuffle=True,
                             track_times=False)
        f.attrs["env_id"] = str(attrs.get("env_id", "Hopper-v4"))
        f.attrs["provenance"] = (f"stand-in sample (not D4RL data) of {args.source.name}, "
                                 f"sha256 {digest}; {rule}")
        f.attrs["source_file"] = args.source.name
        f.attrs["source_sha256"] = digest
        f.attrs["selection_rule"] = rule
        f.attrs["episode_indices"] = json.dumps(keep.tolist())
    kept = returns[keep]
    info = {"file": args.out.name, "source_file": args.source.name, "source_sha256": digest, "selection_rule": rule,
                "episodes": len(chosen), "source_episodes": len(episodes), "transitions": sum(len(e) for e in chosen),
                "return_mean": kept.mean(), "return_std": kept.std(), "return_min": kept.min(), "return_max": kept.max(),
                "source_return_mean": returns.mean(), "source_return_max": returns.max()}
    write_readme(args.out.parent, info)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB): {info['episodes']} episodes, {info['transitions']:,} transitions, "
          f"return mean {info['return_mean']:.1f} ± {info['return_std']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
