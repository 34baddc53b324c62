"""`dt-attn data`: list the datasets the suite knows (and where they are looked for), or summarize one.

Without SPEC: list known datasets, where each is looked for and whether it is present. With SPEC: load it
(validating it) and print its summary.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from agents.fieldtypes import check_field_types
from envs import ObservationFilter, known_datasets, load_dataset
from envs.catalog import minari_root, standin_dir
from envs.d4rl import d4rl_dir
from experiments.common import Command


@dataclass
class DataConfig:
    """What `dt-attn data` lists or summarizes."""

    spec: str | None = field(default=None, metadata={
        "positional": "?", "metavar": "SPEC",
        "help": "dataset to summarize: D4RL id, stand-in id, 'default', Minari id or file path; omit to list "
                "the known datasets"})
    env: str | None = field(default=None, metadata={
        "help": "environment name or gymnasium id when it cannot be inferred"})
    observe: str = field(default="full", metadata={
        "help": 'task variant: "full", "positions", "noisy:SCALE", "flicker:P", "flip:P", or a "+"-joined '
                'combination such as "positions+flicker:0.9" (docs/data.md)'})
    seed: int = field(default=0, metadata={"help": "seed of the noise, flicker and flip draws"})
    no_download: bool = field(default=False, metadata={"help": "never try to download a missing dataset"})
    split_long_episodes: bool = field(default=False, metadata={
        "help": "cut episodes longer than the environment's step limit into pieces of that length"})

    def __post_init__(self) -> None:
        check_field_types(self)
        ObservationFilter.parse(self.observe)  # a bad spec is a usage error (exit code 2), not a bad dataset


def format_listing() -> str:
    """The table `dt-attn data` prints."""
    entries = known_datasets()
    width = max(len(e.id) for e in entries)
    lines = [
        f"stand-in folder: {standin_dir()}  ($DT_ATTN_STANDIN_DIR)",
        f"D4RL folder:     {d4rl_dir()}  ($D4RL_DATASET_DIR; missing files are downloaded when online)",
        f"Minari folder:   {minari_root()}  ($MINARI_DATASETS_PATH)",
        "",
        f"{'id':<{width}}  {'kind':<8}  {'present':<7}  looked for at",
    ]
    for e in entries:
        where = str(e.locations[0])
        if len(e.locations) == 3:
            where += f"  or  {e.locations[1].name} + {e.locations[2].name}"
        note = f"  ({e.note})" if e.note else ""
        lines.append(f"{e.id:<{width}}  {e.kind:<8}  {'yes' if e.present else 'no':<7}  {where}{note}")
    lines.append("")
    lines.append("Any D4RL-layout .hdf5 or Decision Transformer .pkl file can also be given by path.")
    return "\n".join(lines)


def run(cfg: DataConfig) -> int:
    """List datasets, or load one and print its summary (one that cannot be loaded is a user error: one line,
    exit code 2, as in every command)."""
    if cfg.spec is None:
        print(format_listing())
        return 0
    ds = load_dataset(cfg.spec, env=cfg.env, observe=cfg.observe, seed=cfg.seed,
                      download=not cfg.no_download, split_long=cfg.split_long_episodes)
    print(ds.summary())
    return 0


COMMAND = Command("data", "list known datasets or print a dataset's summary", DataConfig, run, __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
