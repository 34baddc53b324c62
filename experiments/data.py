"""`dt-attn data`: list the datasets the suite knows (and where they are looked for), or summarize one."""

from __future__ import annotations

import argparse
import sys

from envs import DatasetError, OptionalDependencyError, known_datasets, load_dataset
from envs.catalog import minari_root, standin_dir
from envs.d4rl import d4rl_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `data` command's arguments."""
    parser.add_argument("spec", nargs="?", default=None,
                        help="dataset to summarize: D4RL id, stand-in id, 'default', Minari id or file path; "
                             "omit to list the known datasets")
    parser.add_argument("--env", default=None, help="environment name or gymnasium id when it cannot be inferred")
    parser.add_argument("--observe", default="full",
                        help='observation filter: "full", "positions", "noisy:SCALE", e.g. "positions+noisy:0.1"')
    parser.add_argument("--seed", type=int, default=0, help="seed of a noisy observation filter")
    parser.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")
    parser.add_argument("--split-long-episodes", action="store_true",
                        help="cut episodes longer than the environment's step limit into pieces of that length")


def register(subparsers) -> None:
    """Add the `data` subcommand to the `dt-attn` parser."""
    parser = subparsers.add_parser(
        "data", help="list known datasets or print a dataset's summary",
        description="Without SPEC: list known datasets, where each is looked for and whether it is present. "
                    "With SPEC: load it (validating it) and print its summary.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    """List datasets, or load one and print its summary."""
    if args.spec is None:
        print(format_listing())
        return 0
    try:
        ds = load_dataset(args.spec, env=args.env, observe=args.observe, seed=args.seed,
                          download=not args.no_download, split_long=args.split_long_episodes)
    except (DatasetError, OptionalDependencyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(ds.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `data` on its own (python -m experiments.data)."""
    parser = argparse.ArgumentParser(prog="dt-attn data", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
