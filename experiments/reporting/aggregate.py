"""Collect finished runs into rows, average them over seeds, and write the CSV and Markdown table.

A *row* is one (run, target) pair: a run evaluated at two return-to-go targets gives two rows.
A *cell* is a (dataset, env id, observe, attention, options, K, steps, target) group of rows
that differ only in their training seed; cells carry the mean and sample std (ddof = 1, ``envs.spread``)
over seeds and rliable's
interquartile mean with its stratified-bootstrap 95% interval (experiments.reporting.stats).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.atomic import write_rows_csv
from agents.config import TOKENS_PER_STEP
from agents.results import EVAL_FILE, ROLLOUTS, rollout_label
from agents.upgrade import FINAL_EVALUATION_NAMES, final_evaluations, read_run_config
from envs.spread import STD_DDOF, format_std, sample_std, sample_std_from_population
from experiments.reporting.stats import iqm_ci

# Files whose presence marks a directory as a run directory (written by `dt-attn train`).
RUN_MARKERS = ("config.json", "checkpoint.pt", "train_summary.json")

ROW_COLUMNS = [
    "dataset", "dataset_label", "env_id", "observe", "attention", "attention_options", "activation", "init",
    "precision", "K", "seed",
    "steps", "batch_size", "target", "episodes", "return_mean", "return_std", "normalized_mean",
    "normalized_std", "length_mean", "score_reference", "train_time_s", "steps_per_s", "tokens_per_step",
    "targets_per_step", "peak_memory_mb", "parameters", "device", "cpu", "dt_attn", "eval_env_steps_per_s",
    "eval_wall_time_s", "eval_seed", "rollout", "method", "std_ddof", "run_dir",
]
# How a runs.csv column is read back (the rest stay strings).
_INT_COLUMNS = ("K", "seed", "steps", "batch_size", "episodes", "std_ddof")
_FLOAT_COLUMNS = ("target", "return_mean", "return_std", "normalized_mean", "normalized_std", "length_mean",
                  "train_time_s", "steps_per_s", "tokens_per_step", "targets_per_step", "peak_memory_mb",
                  "parameters", "eval_env_steps_per_s", "eval_wall_time_s")
CELL_KEY = ("dataset", "env_id", "observe", "attention", "attention_options", "activation", "init",
            "precision", "K", "steps", "batch_size", "target")
CELL_COLUMNS = [
    "dataset", "dataset_label", "env_id", "observe", "attention", "attention_options", "activation", "init",
    "precision", "K", "steps",
    "batch_size",
    "target", "seeds", "seed_list", "episodes", "normalized_mean", "normalized_std", "iqm", "iqm_low",
    "iqm_high", "return_mean", "return_std",
    "train_time_s", "train_s_per_step", "train_s_per_step_std", "steps_per_s", "peak_memory_mb",
    "peak_memory_mb_std", "eval_s_per_step", "eval_s_per_step_std", "parameters", "targets_per_step",
    "rollout", "dt_attn", "label",
]


@dataclass(frozen=True)
class DatasetReference:
    """A dataset's own normalized returns: the average and the best of its episodes."""

    dataset: str
    label: str
    average: float
    best: float
    source: str  # which reference returns the normalization used


# (dataset spec, env override or None) -> reference; raises when the dataset cannot be loaded
ReferenceFn = Callable[[str, "str | None"], DatasetReference]


# ----------------------------------------------------------------------------- discovery
def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) run directories under ``paths``, each searched recursively.

    A run is finished when it holds a final evaluation (eval.json, or eval-streaming.json; format 1's
    eval-naive.json too); a directory with a run marker (config.json, checkpoint.pt, train_summary.json)
    but none is unfinished.
    """
    finished: set[Path] = set()
    unfinished: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory; pass run directories or folders "
                                    "that contain them")
        candidates = {root} | {p.parent for marker in (*FINAL_EVALUATION_NAMES, *RUN_MARKERS)
                               for p in root.rglob(marker)}
        for d in candidates:
            if any((d / name).is_file() for name in FINAL_EVALUATION_NAMES):
                finished.add(d.resolve())
            elif any((d / m).exists() for m in RUN_MARKERS):
                unfinished.add(d.resolve())
    return sorted(finished), sorted(unfinished - finished)


def read_json(path: Path, tolerant: bool = False) -> dict[str, Any] | None:
    """The parsed file, None when it does not exist; a malformed or unreadable file raises,
    or also gives None when ``tolerant`` (for status checks that treat it as absent)."""
    if not path.is_file():
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        if tolerant:
            return None
        raise


def _num(value: Any) -> float:
    """A float, NaN for a missing value."""
    return math.nan if value is None else float(value)


def init_label(init: str, std: float) -> str:
    """A run's weight initialization in a table: "torch-default", "normal", or "normal std 0.05" when the
    standard deviation is not the default 0.02."""
    return f"normal std {std:g}" if init == "normal" and std != 0.02 else init


def main_evaluation(run_dir: Path) -> dict[str, Any] | None:
    """The evaluation a run is reported by: of its latest checkpoint, the exact one where it holds both."""
    found = [record for _, record in final_evaluations(run_dir).values()]
    return max(found, key=lambda r: (r.get("train_steps", -1), r["rollout"] == "exact"), default=None)


def load_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per evaluated target of a finished run (its ``main_evaluation``, train_summary.json and
    config.json, any format)."""
    run_dir = Path(run_dir)
    ev = main_evaluation(run_dir)
    if ev is None:
        raise FileNotFoundError(f"{run_dir} has no {EVAL_FILE}: the run is unfinished (rerun "
                                "it with --resume)")
    train = read_json(run_dir / "train_summary.json") or {}
    config = read_run_config(run_dir / "config.json") or {}
    # the code and CPU that trained it; runs written before training recorded them give their evaluation's
    versions = train.get("versions") or ev.get("versions", {})
    rows = []
    for res in ev.get("results", []):
        sps = _num(res.get("env_steps_per_s"))
        rows.append({
            "dataset": ev.get("dataset", config.get("dataset", "")),
            "dataset_label": ev.get("dataset_label", train.get("dataset_label", "")),
            "env_id": ev.get("env_id", train.get("env_id", "")),
            "observe": ev.get("observe", config.get("observe", "full")),
            "attention": ev.get("attention", config.get("attention", "")),
            "attention_options": json.dumps(ev.get("attention_options", {}), sort_keys=True),
            "activation": ev["activation"],
            "init": init_label(ev["init"], ev["init_std"]),
            "precision": ev["train_precision"],
            "K": int(ev.get("context", config.get("context", 0))),
            "seed": int(ev.get("train_seed", config.get("seed", 0))),
            "steps": int(ev.get("train_steps", train.get("steps", 0))),
            "batch_size": int(config.get("batch_size", 0)),
            "target": float(res["target"]),
            "episodes": int(res.get("episodes", 0)),
            "return_mean": _num(res.get("return_mean")),
            "return_std": _num(res.get("return_std")),
            "normalized_mean": _num(res.get("normalized_mean")),
            "normalized_std": _num(res.get("normalized_std")),
            "length_mean": _num(res.get("length_mean")),
            "score_reference": ev.get("score_reference", ""),
            "train_time_s": _num(train.get("train_time_s")),
            "steps_per_s": _num(train.get("steps_per_s")),
            "tokens_per_step": _num(train.get("tokens_per_step")),
            "targets_per_step": _num(train.get("targets_per_step")),
            "peak_memory_mb": _num(train.get("peak_memory_mb")),
            "parameters": _num(train.get("parameters")),
            "device": train.get("device", ""),
            "cpu": versions.get("cpu", ""),
            "dt_attn": versions.get("dt_attn", ""),
            "eval_env_steps_per_s": sps,
            "eval_wall_time_s": _num(res.get("wall_time_s")),
            "eval_seed": ev.get("eval_seed", ""),
            "rollout": rollout_label(ev["rollout"]),
            "method": ev.get("method", ""),
            "std_ddof": STD_DDOF,  # of return_std and normalized_std over the episodes (agents.upgrade)
            "run_dir": str(run_dir),
            "env": config.get("env"),  # the run's env override, needed to reload its dataset
        })
    return rows


def load_runs(run_dirs: Iterable[Path]) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Rows of every run; runs whose files cannot be read, or whose scores are not finite numbers (a
    diverged policy), are returned as (dir, reason)."""
    rows: list[dict[str, Any]] = []
    broken: list[tuple[Path, str]] = []
    for d in run_dirs:
        try:
            run_rows = load_run(d)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            broken.append((d, f"unreadable results: {type(exc).__name__}: {exc}"))
            continue
        bad = [r for r in run_rows
               if not (math.isfinite(r["normalized_mean"]) and math.isfinite(r["return_mean"]))]
        if bad:
            targets = ", ".join(f"{r['target']:g}" for r in bad)
            broken.append((d, (f"failed: non-finite score at target(s) {targets} (the policy diverged); "
                               "retrain it, e.g. with a lower --lr")))
        else:
            rows.extend(run_rows)
    return rows, broken


_ROLLOUT_LABELS = {rollout_label(r) for r in ROLLOUTS}


def _csv_rollout(described: str, raw: dict[str, str]) -> str:
    """The rollout of a row of a CSV that described it: its readout column, or before that column the
    description itself (the re-run path was called "naive", a context holding the episode "whole")."""
    if raw.get("readout") in ROLLOUTS:
        return raw["readout"]
    return "exact" if described.startswith(("naive", "incremental: whole episode")) else "streaming"


def _csv_field(column: str, text: str) -> Any:
    if column in _INT_COLUMNS:
        return int(float(text)) if text else 0
    if column in _FLOAT_COLUMNS:
        return float(text) if text else math.nan
    return text


def load_rows_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a runs.csv written by an earlier report, typed as ``load_run`` gives them.

    Lets a report combine runs whose directories are gone (or live on another machine) with live
    ones. Files from before the batch_size column get it back from tokens_per_step / (3 K); files whose
    rollout column described the method are read as the current columns; files from before the std_ddof
    column held population stds over the episodes (ddof = 0), converted here to sample stds.
    """
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("dataset", "attention", "K", "seed", "target", "normalized_mean")
                   if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a runs.csv from `dt-attn report` (no column(s) "
                             f"{', '.join(missing)})")
        rows = []
        for raw in reader:
            if None in raw.values() or None in raw:  # DictReader's marks of a short or a long row
                have = sum(v is not None for k, v in raw.items() if k is not None) + len(raw.get(None, []))
                raise ValueError(f"{path}: line {reader.line_num} is an incomplete row ({have} fields, the "
                                 f"header has {len(reader.fieldnames)}; was the file cut?): rebuild it with "
                                 "`dt-attn report`, or delete that line")
            row = {c: _csv_field(c, raw.get(c) or "") for c in ROW_COLUMNS}
            if not row["batch_size"] and row["K"] and not math.isnan(row["tokens_per_step"]):
                row["batch_size"] = round(row["tokens_per_step"] / (TOKENS_PER_STEP * row["K"]))
            row["observe"] = row["observe"] or "full"
            row["attention_options"] = row["attention_options"] or "{}"
            row["activation"] = row["activation"] or "gelu"  # CSVs from before the column: runs of GELU days
            row["precision"] = row["precision"] or "fp32"
            row["init"] = row["init"] or "unknown"  # the column came after the field: not known from the CSV
            if not row["std_ddof"]:
                _sample_stds_of_episodes(row)
            if row["rollout"] not in _ROLLOUT_LABELS:  # a CSV whose rollout column described the method
                rollout = rollout_label(_csv_rollout(row["rollout"], raw))
                row["method"], row["rollout"] = row["rollout"], rollout
            # run_dir is written relative to the CSV's folder (see write_csv)
            row["run_dir"] = (str((path.parent / row["run_dir"]).resolve()) if row["run_dir"]
                              else f"{path}:{reader.line_num}")
            row["env"] = None
            rows.append(row)
    return rows


def _sample_stds_of_episodes(row: dict[str, Any]) -> None:
    """A runs.csv row written with population stds over its episodes (ddof = 0), with sample stds."""
    for column in ("return_std", "normalized_std"):
        row[column] = sample_std_from_population(row[column], row["episodes"])
    row["std_ddof"] = STD_DDOF


# ----------------------------------------------------------------------------- averaging
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof = 1, ``envs.spread``) of the finite values; NaN for a mean of none and a
    std of fewer than two."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), sample_std(arr)


def cell_sort_key(cell: dict[str, Any]) -> tuple:
    """Table order of cells: dataset, observe, attention, K, options, activation, init, precision, steps,
    batch, target, env."""
    # K before the options: some options (Combiner's default span) change with K
    return (cell["dataset"], cell["observe"], cell["attention"], cell["K"], cell["attention_options"],
            cell["activation"], cell["init"], cell["precision"], cell["steps"], cell["batch_size"],
            cell["target"], cell["env_id"])


# Run settings that, when runs of one attention differ in them, join its display label (column, text).
_LABEL_SETTINGS = (("steps", "{} steps"), ("batch_size", "batch {}"), ("env_id", "{}"), ("activation", "{}"),
                   ("init", "init {}"), ("precision", "{}"))
#: How a report draws its lines: one per batch size (the default), or one per attention across batch sizes,
#: for sweeps that held the action targets per step fixed (``dt-attn sweep --targets-per-step``).
LINES_BY = ("batch", "targets")


def assign_labels(cells: list[dict[str, Any]], lines_by: str = "batch") -> None:
    """Display label per cell (one plotted line per label): the attention name, plus what tells apart
    runs of one name: options at one K (some options, like Combiner's span, vary with K), steps, batch,
    env id, activation, init, precision. With ``lines_by="targets"`` the batch does not split lines; the label
    names the line's median targets per step instead (cells must carry ``targets_per_step``)."""
    if lines_by not in LINES_BY:
        raise ValueError(f"lines_by must be one of {LINES_BY}, got {lines_by!r}")
    label_settings = [s for s in _LABEL_SETTINGS if lines_by == "batch" or s[0] != "batch_size"]
    options: dict[tuple, set[str]] = {}
    settings: dict[tuple, dict[str, set]] = {}  # across observe variants: one name per setting
    for c in cells:
        key = (c["dataset"], c["observe"], c["attention"], c["K"])
        options.setdefault(key, set()).add(c["attention_options"])
        seen = settings.setdefault((c["dataset"], c["attention"]), {col: set() for col, _ in label_settings})
        for col, _ in label_settings:
            seen[col].add(c[col])
    for c in cells:
        parts = [c["attention"]]
        if len(options[(c["dataset"], c["observe"], c["attention"], c["K"])]) > 1:
            parts.append(c["attention_options"])
        seen = settings[(c["dataset"], c["attention"])]
        parts += [text.format(c[col]) for col, text in label_settings if len(seen[col]) > 1]
        c["label"] = " ".join(parts)
    if lines_by == "targets":
        _label_targets(cells)


def _label_targets(cells: list[dict[str, Any]]) -> None:
    """Append "~N targets/step" (the median over the line's cells, 2 significant digits) to every label, and
    refuse two cells that would share one point of a line (two batch sizes at one K)."""
    missing = sorted({c["attention"] for c in cells if math.isnan(c.get("targets_per_step", math.nan))})
    if missing:
        raise ValueError(f"runs of {', '.join(missing)} do not record their targets per step (trained before "
                         f"train_summary.json held it); report them with --lines-by batch")
    for members in group_by(cells, ("dataset", "label")).values():
        median = float(np.median([c["targets_per_step"] for c in members]))
        n = int(float(f"{median:.2g}"))
        points = [(c["observe"], c["K"], c["steps"], c["target"], c.get("step")) for c in members]
        clash = sorted({p for p in points if points.count(p) > 1}, key=str)
        if clash:
            observe, k = clash[0][:2]
            raise ValueError(f"{members[0]['label']} has several batch sizes at observe={observe} K={k}; "
                             "with --lines-by targets each line takes one run setting per K: report those "
                             "sweeps separately or use --lines-by batch")
        for c in members:
            c["label"] = f"{c['label']} ~{n} targets/step"


def group_by(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    """The rows grouped by their values of the ``key`` columns, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in key), []).append(r)
    return groups


def distinct_seeds(members: list[dict[str, Any]]) -> list[int]:
    """The sorted seeds of one cell's runs; two runs with one seed (a run passed twice) are refused."""
    seeds = sorted({m["seed"] for m in members})
    if len(seeds) != len(members):
        dirs = ", ".join(m["run_dir"] for m in members)
        raise ValueError(f"several runs of one cell share a seed ({dirs}); pass each run directory once")
    return seeds


def episodes_label(counts: Iterable[int]) -> str:
    """The episodes per seed of a cell: "10", or "5-10" when its runs evaluated different numbers."""
    counts = sorted(set(counts))
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def summarize(rows: list[dict[str, Any]], lines_by: str = "batch",
              resamples: int = 10_000) -> list[dict[str, Any]]:
    """One cell per (dataset, env id, observe, attention, options, activation, init, precision, K, steps,
    batch, target): mean ± std and IQM [95% interval, ``resamples`` bootstrap draws] over seeds; labelled
    for display with ``assign_labels(cells, lines_by)``. ``scores_by_seed`` keeps each seed's score for the
    comparisons between cells."""
    cells = []
    for key, members in group_by(rows, CELL_KEY).items():
        cell: dict[str, Any] = dict(zip(CELL_KEY, key))
        cell["dataset_label"] = members[0]["dataset_label"]
        seeds = distinct_seeds(members)
        cell["seeds"] = len(seeds)
        cell["seed_list"] = " ".join(str(s) for s in seeds)
        cell["episodes"] = episodes_label(m["episodes"] for m in members)
        by_seed = sorted(members, key=lambda m: m["seed"])
        cell["scores_by_seed"] = {m["seed"]: m["normalized_mean"] for m in by_seed}
        cell["normalized_mean"], cell["normalized_std"] = mean_std([m["normalized_mean"] for m in members])
        seed_scores = np.array(list(cell["scores_by_seed"].values()))
        cell["iqm"], cell["iqm_low"], cell["iqm_high"] = iqm_ci(seed_scores, resamples)
        cell["return_mean"], cell["return_std"] = mean_std([m["return_mean"] for m in members])
        cell["train_time_s"], _ = mean_std([m["train_time_s"] for m in members])
        spt = [1.0 / m["steps_per_s"] if m["steps_per_s"] > 0 else math.nan for m in members]
        cell["train_s_per_step"], cell["train_s_per_step_std"] = mean_std(spt)
        cell["steps_per_s"], _ = mean_std([m["steps_per_s"] for m in members])
        cell["peak_memory_mb"], cell["peak_memory_mb_std"] = mean_std([m["peak_memory_mb"] for m in members])
        eps = [1.0 / m["eval_env_steps_per_s"] if m["eval_env_steps_per_s"] > 0 else math.nan
               for m in members]
        cell["eval_s_per_step"], cell["eval_s_per_step_std"] = mean_std(eps)
        cell["parameters"], _ = mean_std([m["parameters"] for m in members])
        cell["targets_per_step"], _ = mean_std([m["targets_per_step"] for m in members])
        rollouts = {m["rollout"] for m in members}
        cell["rollout"] = rollouts.pop() if len(rollouts) == 1 else "mixed"
        # the dt-attn versions its runs were made with ("0.3.0+0.4.0" when they differ); empty when unknown
        cell["dt_attn"] = "+".join(known_values(members, "dt_attn"))
        cells.append(cell)
    cells.sort(key=cell_sort_key)
    assign_labels(cells, lines_by)
    return cells


def known_values(rows: list[dict[str, Any]], column: str) -> list[str]:
    """The distinct values of a provenance column, sorted; runs that did not record it (empty) left out."""
    return sorted({r.get(column) or "" for r in rows} - {""})


def provenance_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Notes for runs made on several CPUs (their times do not compare) or with several dt-attn versions."""
    notes = []
    cpus = known_values(rows, "cpu")
    if len(cpus) > 1:
        notes.append(f"the runs were trained on {len(cpus)} CPUs ({'; '.join(cpus)}): compare training and "
                     "evaluation times only between runs of one CPU (runs.csv, column cpu)")
    versions = known_values(rows, "dt_attn")
    if len(versions) > 1:
        notes.append(f"the runs were made with dt-attn {', '.join(versions)} (cells.csv, column dt_attn)")
    return notes


# ----------------------------------------------------------------------------- references
def load_reference(dataset: str, env: str | None = None) -> DatasetReference:
    """Average and best normalized episode return of a dataset, loaded with ``envs.load_dataset``."""
    import envs

    ds = envs.load_dataset(dataset, env=env, download=False)
    scores, source = envs.normalized_score(ds.env_name, ds.returns(), ref=ds.ref_scores)
    return DatasetReference(dataset=dataset, label=ds.label, average=float(np.mean(scores)),
                            best=float(np.max(scores)), source=source)


def collect_references(
    rows: list[dict[str, Any]], reference_fn: ReferenceFn | None = load_reference
) -> tuple[dict[str, DatasetReference], list[str]]:
    """References of every dataset in ``rows`` and notes for those that could not be loaded."""
    refs: dict[str, DatasetReference] = {}
    notes: list[str] = []
    if reference_fn is None:
        return refs, ["dataset references were not requested"]
    for dataset in sorted({r["dataset"] for r in rows}):
        env = next((r.get("env") for r in rows if r["dataset"] == dataset), None)
        try:
            refs[dataset] = reference_fn(dataset, env)
        except Exception as exc:  # noqa: BLE001 - any loader failure only costs the reference line, never the report
            notes.append(f"no reference for {dataset}: the dataset could not be loaded "
                         f"({type(exc).__name__}: {exc})")
    return refs, notes


# ----------------------------------------------------------------------------- writing
def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_csv(records: list[dict[str, Any]], columns: list[str], path: str | Path) -> Path:
    """Write ``records`` (only ``columns``, in order) as CSV; NaN becomes an empty field. A run_dir is
    written relative to the CSV's folder, so a report folder names its runs alike on every machine."""
    path = Path(path)

    def value(rec: dict[str, Any], c: str) -> Any:
        if c == "run_dir" and os.path.isabs(rec.get(c, "")):
            return os.path.relpath(rec[c], path.parent.resolve())
        return _csv_value(rec.get(c, ""))

    write_rows_csv(path, [{c: value(rec, c) for c in columns} for rec in records], columns)
    return path


def format_pm(mean: float, std: float, digits: int = 1) -> str:
    """'mean ± std', a dash for the std of one value ("32.8 ± –"), a dash alone when there is no value."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {format_std(std, digits)}"


def format_ci(center: float, low: float, high: float, digits: int = 1) -> str:
    """'center [low, high]', or a dash when there is no value."""
    if math.isnan(center):
        return "–"
    return f"{center:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def seeds_by_episodes(cell: dict[str, Any]) -> str:
    """How many runs a figure rests on: "5 × 10" is 5 seeds of 10 episodes each."""
    return f"{cell['seeds']} × {cell['episodes']}"


def _fmt(value: float, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if math.isnan(value) else f"{value * scale:.{digits}f}"


def _score_by_context(cells: list[dict[str, Any]]) -> list[str]:
    """One compact table per (dataset, target, steps): rows observe x attention, columns K; IQM [95% interval]
    (seeds × episodes)."""
    lines: list[str] = []
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["dataset_label"] or c["dataset"], c["target"], c["steps"]), []).append(c)
    for (label, target, steps), members in groups.items():
        ks = sorted({c["K"] for c in members})
        rows = list(dict.fromkeys((c["observe"], c["label"]) for c in members))
        title = (f"### {label}, target {target:g}, {steps} steps: normalized score by context length K "
                 "(IQM [95% CI], seeds × episodes)")
        lines += ["", title, "",
                  "| observe | attention | " + " | ".join(f"K={k}" for k in ks) + " |",
                  "|---|---|" + "---:|" * len(ks)]
        for observe, label_ in rows:
            by_k = {c["K"]: c for c in members if (c["observe"], c["label"]) == (observe, label_)}
            vals = [f"{format_ci(by_k[k]['iqm'], by_k[k]['iqm_low'], by_k[k]['iqm_high'])} "
                    f"({seeds_by_episodes(by_k[k])})" if k in by_k else "" for k in ks]
            lines.append(f"| {observe} | {label_} | " + " | ".join(vals) + " |")
    return lines


def _cost_by_context(cells: list[dict[str, Any]]) -> list[str]:
    """One table per dataset: rows attention, columns K, training ms/step and peak MB averaged over the
    observation variants and targets of that (attention, K)."""
    lines: list[str] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(c["dataset_label"] or c["dataset"], []).append(c)
    for label, members in groups.items():
        ks = sorted({c["K"] for c in members})
        title = (f"### {label}: training cost by context length K (ms per step, peak MB; mean over observe "
                 "variants)")
        lines += ["", title, "", "| attention | " + " | ".join(f"K={k}" for k in ks) + " |",
                  "|---|" + "---:|" * len(ks)]
        for att in sorted({c["label"] for c in members}):
            entries = []
            for k in ks:
                at_k = [c for c in members if (c["label"], c["K"]) == (att, k)]
                ms, _ = mean_std([c["train_s_per_step"] * 1e3 for c in at_k])
                mb, _ = mean_std([c["peak_memory_mb"] for c in at_k])
                entries.append(f"{_fmt(ms, 0)} ms, {_fmt(mb, 0)} MB" if at_k else "")
            lines.append(f"| {att} | " + " | ".join(entries) + " |")
    return lines


def format_markdown(
    cells: list[dict[str, Any]],
    refs: dict[str, DatasetReference],
    notes: list[str],
    unfinished: list[tuple[Path, str]],
    n_runs: int,
) -> str:
    """The report: the table of cells (mean ± std over seeds), dataset references, unfinished runs."""
    lines = [
        "# dt-attn results",
        "",
        (f"{n_runs} finished run(s) in {len(cells)} table row(s); {len(unfinished)} unfinished or failed "
         "run(s)."),
        "",
        "## Normalized score by cell (over seeds: mean ± std, and IQM with its 95% interval)",
        "",
        ("| dataset | observe | attention | K | target | steps | batch | seeds × episodes | rollout | "
         "normalized | IQM [95% CI] | return | train ms/step | peak MB | eval ms/step |"),
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(
            f"| {c['dataset_label'] or c['dataset']} | {c['observe']} | {c['label']} | {c['K']} | "
            f"{c['target']:g} | {c['steps']} | {c['batch_size']} | {seeds_by_episodes(c)} | {c['rollout']} | "
            f"{format_pm(c['normalized_mean'], c['normalized_std'])} | "
            f"{format_ci(c['iqm'], c['iqm_low'], c['iqm_high'])} | "
            f"{format_pm(c['return_mean'], c['return_std'])} | {_fmt(c['train_s_per_step'], 1, 1e3)} | "
            f"{_fmt(c['peak_memory_mb'], 0)} | {_fmt(c['eval_s_per_step'], 2, 1e3)} |"
        )
    lines += _score_by_context(cells)
    lines += _cost_by_context(cells)
    lines += [
        "",
        ("Every figure is over training seeds, each seed scored by the mean of its episodes (seeds × "
         "episodes says how many of each). std is the sample std (ddof = 1) of the per-seed means, a dash "
         "for one seed; IQM is "
         "rliable's interquartile mean (the mean of the middle half of the seeds' scores) with a 95% "
         "stratified-bootstrap percentile interval over seeds; rollout: *exact* (the function that was "
         "trained: the last K steps) or *streaming "
         "(approximate)* (`--rollout streaming`: a sliding window of 3K - 1 tokens per layer, so upper "
         "layers see past K steps); a run holding both is reported by its exact evaluation. Costs are means "
         "over seeds: train ms/step = 1000 / training steps per second, peak MB = peak memory of the "
         "training process, eval ms/step = evaluation wall time per environment step (all parallel envs)."),
        "",
        "## Dataset references (normalized episode returns of the training data)",
        "",
    ]
    if refs:
        lines += ["| dataset | label | average | best | normalized with |", "|---|---|---:|---:|---|"]
        lines += [f"| {r.dataset} | {r.label} | {r.average:.1f} | {r.best:.1f} | {r.source} |"
                  for r in refs.values()]
    lines += [f"* {n}" for n in notes] if notes else []
    if not refs and not notes:
        lines.append("* none")
    if unfinished:
        lines += ["", "## Unfinished or failed runs (not in the table)", ""]
        lines += [f"* {d}: {why}" for d, why in unfinished]
    return "\n".join(lines) + "\n"
