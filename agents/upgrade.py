"""Saved run files of any format, read as the current one: the one place that knows older layouts.

Every file a run writes carries its format version, ``"format": FORMAT`` (config.json, the checkpoint
payload, each evaluation JSON file); whatever reads one of them goes through this module, which maps each
older version to the next until the current one. A file of a newer version than this code knows is
refused with a clear message.

Format 1 had no version key (checkpoints were tagged ``"dt-attn/checkpoint/1"``, evaluations
``"schema": "dt-attn/eval/1"``) and differs from format 2 in:

* fields added during format 1: a file without ``activation`` used GELU, without ``init`` PyTorch's
  default initialization ("torch-default"), without ``precision`` float32;
* the rollout vocabulary: a run's ``eval.json`` held the streaming rollout, ``eval-naive.json`` (and
  ``evals/step-N-naive.json``) the exact one; an evaluation said ``"exact_readout": true/false`` (or,
  older still, only described its rollout per target, "naive: ..." or "incremental: ..."); its config
  said ``"naive"``; a training config said ``eval_exact`` and its evaluations streamed.

Format 2 differs from format 3 only in a checkpoint's model config (``agents.model.DTConfig``): format 2
held the block stack's fields (embed_dim, n_layers, n_heads, dropout, activation, attention,
attention_options) beside the others; format 3 holds them under ``transformer`` (``dt_attn``'s
TransformerConfig, with its mlp_ratio, 4 in every earlier file).

Format 3 differs from format 4 in:

* the dropouts: a training config without ``attention_dropout`` and ``embed_dropout``, and a model config
  without ``embed_dropout`` and ``transformer.attention_dropout``, dropped out neither attention
  probabilities nor embeddings (0.0);
* the channel mixer: a training config without ``mlp`` and ``moe_aux_weight`` used the dense MLP ("mlp";
  0.01, which a dense MLP does not use); a model config's stack gets them from TransformerConfig's
  defaults;
* an evaluation's ``return_std`` and ``normalized_std`` per target were population stds over its episodes
  (ddof = 0); format 4 holds sample stds (ddof = 1, ``envs.spread``), converted exactly from the old ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from agents.results import EVAL_FILE, STREAMING_SUFFIX, rollout_label
from envs.spread import sample_std_from_population

#: The format version of the files this code writes.
FORMAT = 4

# Values that format-1 files without the field had used.
_FORMAT1_MODEL_DEFAULTS = {"activation": "gelu", "init": "torch-default", "init_std": 0.02}
_FORMAT1_RUN_DEFAULTS = {**_FORMAT1_MODEL_DEFAULTS, "precision": "fp32", "split_long_episodes": False}
_FORMAT1_ONLY_RUN_KEYS = ("eval_exact",)  # training config keys that format 1 alone wrote
_FORMAT1_EXACT_SUFFIX = "-naive"  # format 1's file names of exact evaluations
_CHECKPOINT_FORMAT1_TAG = "dt-attn/checkpoint/1"
# The model config fields that moved under "transformer" in format 3.
_FORMAT2_TRANSFORMER_FIELDS = ("embed_dim", "n_layers", "n_heads", "dropout", "activation", "attention",
                               "attention_options")
# The dropouts format 4 added, at the value every earlier run trained with: none.
_FORMAT3_RUN_ADDED = {"attention_dropout": 0.0, "embed_dropout": 0.0, "mlp": "mlp", "moe_aux_weight": 0.01}


def _version(value: Any, what: str) -> int:
    """The format version a file states (None: format 1); a newer or unknown one is refused."""
    if value is None or value == _CHECKPOINT_FORMAT1_TAG:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} has an unknown format {value!r}; it was not written by dt-attn")
    if value > FORMAT:
        raise ValueError(f"{what} has format {value}, newer than this dt-attn reads "
                         f"({FORMAT}); upgrade dt-attn")
    return value


# ----------------------------------------------------------------------------- configs
def upgrade_model_config(config: dict[str, Any], version: int) -> dict[str, Any]:
    """A checkpoint's model config (``DTConfig`` fields) of format ``version``, as the current format."""
    if version < 2:
        config = {**_FORMAT1_MODEL_DEFAULTS, **config}
    if version < 3:
        config = {**{k: v for k, v in config.items() if k not in _FORMAT2_TRANSFORMER_FIELDS},
                  "transformer": {k: config[k] for k in _FORMAT2_TRANSFORMER_FIELDS if k in config}}
    if version < 4:
        config = {"embed_dropout": 0.0, **config,
                  "transformer": {"attention_dropout": 0.0, **config["transformer"]}}
    return config


def is_saved_run_config(config: dict[str, Any]) -> bool:
    """Whether a training config dict is one dt-attn saved (it states its format, or it holds a key that
    only format 1, which stated none, wrote) rather than one a user wrote in the current keys."""
    return "format" in config or any(key in config for key in _FORMAT1_ONLY_RUN_KEYS)


def upgrade_run_config(config: dict[str, Any], version: int | None = None) -> dict[str, Any]:
    """A training config (config.json, or a checkpoint's ``config``) as the current format, without the
    ``format`` key; ``version`` defaults to the one the dict states."""
    config = dict(config)
    stated = config.pop("format", None)
    version = version if version is not None else _version(stated, "the training config")
    if version < 2:
        config = {**_FORMAT1_RUN_DEFAULTS, **config}
        config.pop("eval_exact", None)  # format 1 evaluated with the streaming rollout (eval_exact added an
        config["rollout"] = "streaming"  # exact one beside it, in files of its own)
    if version < 4:
        config = {**_FORMAT3_RUN_ADDED, **config}
    return config


def read_run_config(path: str | Path) -> dict[str, Any] | None:
    """A run's config.json as the current format; None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return upgrade_run_config(json.loads(path.read_text()))


# ----------------------------------------------------------------------------- checkpoints
def upgrade_checkpoint(payload: dict[str, Any], what: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint payload of any format as the current one (model and training configs included)."""
    version = _version(payload.get("format"), what)
    if version == FORMAT:
        return payload
    payload = dict(payload)
    payload["model_config"] = upgrade_model_config(payload["model_config"], version)
    payload["config"] = upgrade_run_config(payload["config"], version)
    payload["format"] = FORMAT
    return payload


# ----------------------------------------------------------------------------- evaluations
def upgrade_evaluation(record: dict[str, Any], what: str = "evaluation record") -> dict[str, Any]:
    """An evaluation record (eval.json and kin) of any format as the current one."""
    version = _version(record.get("format"), what)
    if version < 2:
        record = _evaluation_from_format1(record)
    if version < 4:
        record = _evaluation_from_format3(record)
    return record


def _evaluation_from_format3(old: dict[str, Any]) -> dict[str, Any]:
    """Format 3's per-target stds over the episodes (ddof = 0) as sample stds (ddof = 1)."""
    results = []
    for r in old.get("results", []):
        n = int(r.get("episodes", 0))
        results.append({**r, **{key: sample_std_from_population(r[key], n) for key in
                                ("return_std", "normalized_std") if r.get(key) is not None}})
    return {**old, "results": results, "format": FORMAT}


def _evaluation_from_format1(old: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in old.items() if k not in ("schema", "exact_readout")}
    for key, value in (("activation", "gelu"), ("init", "torch-default"), ("init_std", 0.02),
                       ("train_precision", "fp32")):
        record.setdefault(key, value)
    results = [dict(r) for r in old.get("results", [])]
    described = results[0].pop("rollout", "") if results else ""
    for r in results[1:]:
        r.pop("rollout", None)
    if "exact_readout" in old:
        exact = bool(old["exact_readout"])
    else:  # older still: only the description says which rollout ran
        exact = described.startswith("naive") or described == "incremental: whole episode"
    record["rollout"] = "exact" if exact else "streaming"
    record["method"] = _format1_method(described, record["rollout"])
    record["results"] = results
    config = dict(old.get("eval_config", {}))
    config["rollout"] = "exact" if config.pop("naive", False) else "streaming"
    record["eval_config"] = config
    record["format"] = FORMAT
    return record


def _format1_method(described: str, rollout: str) -> str:
    """A format-1 rollout description in the current words."""
    rerun = re.match(r"naive(?: \((\S+) has no window option\))?: recompute the last (\d+) steps", described)
    if rerun:
        fallback = f" ({rerun.group(1)} has no window option to stream with)" if rerun.group(1) else ""
        return f"exact: the last {rerun.group(2)} steps re-run every step{fallback}"
    if described == "incremental: whole episode":
        return "exact: incremental state over the whole episode"
    window = re.match(r"incremental: sliding window of (\d+) tokens per layer", described)
    if window:
        return f"{rollout_label('streaming')}: sliding window of {window.group(1)} tokens per layer"
    return f"{rollout_label(rollout)}: {described}" if described else rollout_label(rollout)


def read_evaluation(path: str | Path) -> dict[str, Any] | None:
    """An evaluation JSON file as the current format; None when it does not exist (a malformed file
    raises)."""
    path = Path(path)
    if not path.is_file():
        return None
    return upgrade_evaluation(json.loads(path.read_text()), str(path))


def _variants(path: Path) -> list[Path]:
    """The files that may hold an evaluation written for ``path`` (eval.json, evals/step-N.json): its
    exact name, its streaming name, and format 1's name of the exact one."""
    return [path, path.with_name(f"{path.stem}{STREAMING_SUFFIX}{path.suffix}"),
            path.with_name(f"{path.stem}{_FORMAT1_EXACT_SUFFIX}{path.suffix}")]


#: File names a run's final evaluation may have: eval.json, eval-streaming.json, format 1's eval-naive.json.
FINAL_EVALUATION_NAMES = tuple(p.name for p in _variants(Path(EVAL_FILE)))


def final_evaluation_files(run_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every final evaluation a run directory holds (any format, any rollout), as (file, record)."""
    found = []
    for path in _variants(Path(run_dir) / EVAL_FILE):
        record = read_evaluation(path)
        if record is not None:
            found.append((path, record))
    return found


def latest_by_rollout(found: list[tuple[Path, dict[str, Any]]]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Per rollout the evaluation of the latest checkpoint (``train_steps``); of equal ones the first
    listed."""
    best: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path, record in found:
        held = best.get(record["rollout"])
        if held is None or record.get("train_steps", -1) > held[1].get("train_steps", -1):
            best[record["rollout"]] = (path, record)
    return best


def final_evaluations(run_dir: str | Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """A run's final evaluation per rollout ("exact", "streaming"), as (file, record)."""
    return latest_by_rollout(final_evaluation_files(run_dir))


def periodic_evaluations(run_dir: str | Path) -> dict[str, dict[int, tuple[Path, dict[str, Any]]]]:
    """The evaluations a run wrote during training (evals/), per rollout, one per checkpoint step."""
    out: dict[str, dict[int, tuple[Path, dict[str, Any]]]] = {}
    folder = Path(run_dir) / "evals"
    stems = sorted({p.stem.removesuffix(STREAMING_SUFFIX).removesuffix(_FORMAT1_EXACT_SUFFIX)
                    for p in folder.glob("step-*.json")})
    for stem in stems:
        for path in _variants(folder / f"{stem}.json"):
            record = read_evaluation(path)
            if record is not None:
                out.setdefault(record["rollout"], {}).setdefault(int(record.get("train_steps", -1)),
                                                                 (path, record))
    return out
