"""`dt-attn report`: rebuild the CSV, the Markdown table and the plots from finished runs.

python -m experiments.reporting.report RUN_DIRS... [--out DIR]: each argument is a run directory, a
folder searched recursively for run directories (those holding a final evaluation: eval.json or
eval-streaming.json), or a runs.csv written by an earlier report (its rows join the table; a live run
directory wins over a CSV row of the same cell and seed). Run directories of every format are read (see
agents.upgrade).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agents.atomic import write_text
from agents.fieldtypes import check_field_types, check_rules
from experiments.common import Command
from experiments.reporting.aggregate import (
    CELL_COLUMNS,
    CELL_KEY,
    EVAL_FILE,
    LINES_BY,
    ROW_COLUMNS,
    RUN_MARKERS,
    ReferenceFn,
    collect_references,
    find_runs,
    format_markdown,
    load_reference,
    load_rows_csv,
    load_runs,
    provenance_notes,
    summarize,
    write_csv,
)
from experiments.reporting.comparisons import (
    POI_COLUMNS,
    compare_cells,
    format_comparisons,
    missing_baselines,
)
from experiments.reporting.curves import (
    CURVE_COLUMNS,
    POINT_COLUMNS,
    curve_rollouts,
    format_curves,
    load_curve_points,
    summarize_curves,
)
from experiments.reporting.rollouts import (
    PAIR_COLUMNS,
    ROLLOUT_CELL_COLUMNS,
    format_rollouts,
    load_rollout_pairs,
    summarize_rollouts,
)


@dataclass
class Report:
    """What a report build wrote and found."""

    out_dir: Path
    runs: list[Path]
    unfinished: list[tuple[Path, str]]
    files: dict[str, Path] = field(default_factory=dict)  # kind -> path: runs_csv, cells_csv, markdown, ...
    markdown: str = ""


def default_out_dir(paths: list[str | Path]) -> Path:
    """<common parent of the inputs>/report; a single run directory or CSV file reports into its parent."""
    resolved = [Path(p).resolve() for p in paths]
    common = Path(os.path.commonpath([str(p) for p in resolved]))
    if common.is_file() or any((common / m).exists() for m in (EVAL_FILE, *RUN_MARKERS)):
        common = common.parent
    return common / "report"


def build_report(
    paths: list[str | Path],
    out_dir: str | Path | None = None,
    reference_fn: ReferenceFn | None = load_reference,
    plots: bool = True,
    lines_by: str = "batch",
    baseline_k: int = 20,
    baseline_attention: str = "softmax",
) -> Report:
    """Aggregate every finished run under ``paths`` (and the rows of any runs.csv among them) into
    out_dir: runs.csv, cells.csv, report.md, PNGs; rollout_pairs.csv and rollouts.csv when runs hold both an
    exact and a streaming evaluation (see experiments.reporting.rollouts); curve_points.csv, curves.csv and
    curves.png (curves_streaming.* for the streaming rollout) when runs evaluated during training (see
    experiments.reporting.curves); poi.csv (probabilities of improvement against
    ``baseline_k`` and ``baseline_attention``, see experiments.reporting.comparisons), and profiles.png
    (performance profiles, with rliable installed).
    ``lines_by`` (see ``assign_labels``): "batch" draws one line per attention and batch size, "targets" one
    per attention across batch sizes."""
    if not paths:
        raise ValueError("no run directories given; pass run directories or folders that contain them")
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    csv_files = [Path(p) for p in paths if Path(p).suffix == ".csv"]
    missing = [p for p in csv_files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such runs.csv: {', '.join(map(str, missing))}")
    dirs = [p for p in paths if Path(p).suffix != ".csv"]
    finished, unfinished_dirs = find_runs(dirs)
    rows, broken = load_runs(finished)
    rows_by_run: dict[Path, list[dict]] = {}  # the finished run directories' rows, for rollouts and curves
    for r in rows:
        rows_by_run.setdefault(Path(r["run_dir"]), []).append(r)
    def identity(row: dict) -> tuple:  # one seed of one cell: the same run wherever its folder now is
        return (*(row[k] for k in CELL_KEY), row["seed"])

    live = {identity(r) for r in rows}
    for csv_file in csv_files:
        rows += [r for r in load_rows_csv(csv_file) if identity(r) not in live]
    unfinished = [(d, f"no final evaluation ({EVAL_FILE}; training or evaluation did not finish)")
                  for d in unfinished_dirs] + broken
    runs = sorted({Path(r["run_dir"]) for r in rows})  # a CSV row's run_dir may no longer exist
    report = Report(out_dir=out, runs=runs, unfinished=unfinished)
    if not rows:
        listed = "".join(f"\n  {d}: {why}" for d, why in unfinished)
        raise ValueError(f"no finished runs ({EVAL_FILE}) under {', '.join(map(str, paths))}{listed}")
    cells = summarize(rows, lines_by)
    refs, notes = collect_references(rows, reference_fn)
    report.files["runs_csv"] = write_csv(rows, ROW_COLUMNS, out / "runs.csv")
    report.files["cells_csv"] = write_csv(cells, CELL_COLUMNS, out / "cells.csv")
    if plots:
        from experiments.reporting.plots import plot_costs, plot_scores

        report.files["scores_png"] = plot_scores(cells, refs, out / "scores.png")
        report.files["costs_png"] = plot_costs(cells, out / "costs.png")
    report.markdown = format_markdown(cells, refs, notes, unfinished, len(runs))
    comparisons = compare_cells(cells, baseline_k, baseline_attention)
    report.files["poi_csv"] = write_csv(comparisons, POI_COLUMNS, out / "poi.csv")
    report.markdown += "\n".join(format_comparisons(comparisons)) + "\n"
    report.markdown += "".join(f"* {n}\n" for n in missing_baselines(cells, baseline_k, baseline_attention))
    report.markdown += "".join(f"* {n}\n" for n in provenance_notes(rows))
    if plots:
        from experiments.reporting.plots import plot_profiles

        try:
            report.files["profiles_png"] = plot_profiles(cells, out / "profiles.png")
        except ValueError as exc:  # rliable missing: the report stands without the profiles
            report.markdown += f"\n* no performance profiles: {exc}\n"
    pairs, mismatched = load_rollout_pairs(rows_by_run)
    if pairs or mismatched:
        compared = summarize_rollouts(pairs, lines_by)
        report.files["rollout_pairs_csv"] = write_csv(pairs, PAIR_COLUMNS, out / "rollout_pairs.csv")
        report.files["rollouts_csv"] = write_csv(compared, ROLLOUT_CELL_COLUMNS, out / "rollouts.csv")
        report.markdown += "\n".join(format_rollouts(compared)) + "\n"
        report.markdown += "".join(f"* not compared: {d}: {why}\n" for d, why in mismatched)
    for rollout in curve_rollouts(rows_by_run):
        points, left_out = load_curve_points(rows_by_run, rollout)
        suffix = "" if rollout == "exact" else f"_{rollout}"
        if points:
            curves = summarize_curves(points, lines_by)
            report.files[f"curve_points{suffix}_csv"] = write_csv(points, POINT_COLUMNS,
                                                                  out / f"curve_points{suffix}.csv")
            report.files[f"curves{suffix}_csv"] = write_csv(curves, CURVE_COLUMNS,
                                                            out / f"curves{suffix}.csv")
            if plots:
                from experiments.reporting.plots import plot_curves

                report.files[f"curves{suffix}_png"] = plot_curves(curves, refs, out / f"curves{suffix}.png",
                                                                      rollout)
            report.markdown += "\n".join(format_curves(curves, rollout)) + "\n"
        report.markdown += "".join(f"* not in a learning curve: {p}: {why}\n" for p, why in left_out)
    md = out / "report.md"
    write_text(md, report.markdown)
    report.files["markdown"] = md
    return report


def print_report(report: Report) -> None:
    """The table, the unfinished runs and where the files went."""
    print(report.markdown)
    for kind, path in report.files.items():
        print(f"{kind:<18} {path}")


@dataclass
class ReportConfig:
    """Which runs to aggregate, and where to."""

    run_dirs: list[str] = field(default_factory=list, metadata={
        "positional": "+", "metavar": "RUN_DIR",
        "help": "run directory, a folder searched recursively for run directories, or a runs.csv from an "
                "earlier report"})
    out: str | None = field(default=None, metadata={
        "help": "output folder (default: <common parent of RUN_DIRs>/report)"})
    no_references: bool = field(default=False, metadata={
        "help": "skip loading the datasets for their average/best reference scores"})
    no_plots: bool = field(default=False, metadata={"help": "write only the CSV files and the table"})
    baseline_k: int = field(default=20, metadata={
        "help": "context length every other K of a line is compared with (probability of improvement)"})
    baseline_attention: str = field(default="softmax", metadata={
        "help": "attention every other attention is compared with at equal K (probability of improvement)"})
    lines_by: str = field(default="batch", metadata={
        "help": "one table row and plotted line per attention and batch size (batch), or per "
                "attention across batch sizes (targets: for sweeps run with --targets-per-step, "
                "whose batch changes with K)"})

    def __post_init__(self) -> None:
        check_field_types(self)
        check_rules(self, "report config",
                    {"lines_by": (self.lines_by in LINES_BY, "one of " + ", ".join(LINES_BY)),
                     "baseline_k": (self.baseline_k >= 1, ">= 1")})


def run(cfg: ReportConfig) -> int:
    """Build the report of ``cfg.run_dirs`` and print it."""
    report = build_report(cfg.run_dirs, cfg.out, None if cfg.no_references else load_reference,
                          plots=not cfg.no_plots, lines_by=cfg.lines_by, baseline_k=cfg.baseline_k,
                          baseline_attention=cfg.baseline_attention)
    print_report(report)
    return 0


COMMAND = Command("report", "aggregate finished runs into a CSV, a table and plots", ReportConfig, run,
                  __doc__)

if __name__ == "__main__":
    sys.exit(COMMAND.main())
