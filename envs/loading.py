"""``load_dataset``: one entry point for D4RL ids, Minari ids, stand-in ids and files."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs import catalog, d4rl
from envs.dataset import TrajectoryDataset
from envs.episodes import Episode, split_long_episodes
from envs.errors import DatasetError, DatasetNotFoundError
from envs.filters import ObservationFilter
from envs.minari_source import MINARI_REF_SOURCE, load_minari
from envs.readers import read_hdf5, read_pkl
from envs.registry import env_name_from_gym_id, get_env_spec, infer_env_name, is_gym_id

HDF5_SUFFIXES = (".hdf5", ".h5")
PKL_SUFFIXES = (".pkl", ".pickle")
SPEC_FORMS = (
    "a D4RL id (hopper-medium-replay-v2), a stand-in id (hopper-medium-replay-standin), "
    "'default' (the embedded sample), a Minari id (mujoco/hopper/medium-v0), "
    "or a path to a D4RL-layout .hdf5 / Decision Transformer .pkl file"
)


def _is_standin_data(name: str, attrs: dict[str, Any]) -> bool:
    texts = [name.lower()] + [str(v).lower() for v in attrs.values() if isinstance(v, str)]
    return any("standin" in t or "stand-in" in t for t in texts)


def _resolve_env(env: str | None, hints: list[str | None], attrs_env_id: str | None,
                 minari: bool, where: str) -> tuple[str, str]:
    """(env name, gymnasium id to evaluate in) from the explicit ``env`` or the hints."""
    if env is not None:
        spec = get_env_spec(env)  # ValueError names the known envs
        if is_gym_id(env):
            return spec.name, env.strip()
        name = spec.name
    else:
        name = infer_env_name(attrs_env_id, *hints)
        if name is None:
            raise DatasetError(
                f"{where}: cannot tell which environment this dataset belongs to; pass --env (env=) one of "
                "hopper, halfcheetah, walker2d (or a gymnasium id such as Hopper-v4)"
            )
    spec = get_env_spec(name)
    if attrs_env_id and env_name_from_gym_id(attrs_env_id) == name:
        return name, attrs_env_id
    return name, spec.gym_id_minari if minari else spec.gym_id_d4rl


def _check_dims(episodes: list[Episode], env_name: str, env_id: str, where: str) -> None:
    spec = get_env_spec(env_name)
    obs_dim, act_dim = episodes[0].observations.shape[1], episodes[0].actions.shape[1]
    if obs_dim != spec.obs_dim:
        raise DatasetError(
            f"{where}: key 'observations' has {obs_dim} features but {env_name} ({env_id}) observations "
            f"have {spec.obs_dim}; is this the right file, or does it belong to another environment (--env)?"
        )
    if act_dim != spec.act_dim:
        raise DatasetError(
            f"{where}: key 'actions' has {act_dim} features but {env_name} ({env_id}) actions have "
            f"{spec.act_dim}; is this the right file, or does it belong to another environment (--env)?"
        )


def _within_step_limit(episodes: list[Episode], env_name: str, split: bool, where: str,
                       notes: list[str]) -> list[Episode]:
    """``episodes``, cut at the environment's step limit when ``split``; episodes over the limit left whole
    are warned about (a file without end flags reads as one long episode)."""
    limit = get_env_spec(env_name).max_episode_steps
    long = [len(ep) for ep in episodes if len(ep) > limit]
    if not long:
        return episodes
    if split:
        notes.append(f"{len(long)} episode(s) longer than {env_name}'s step limit of {limit} were cut into "
                     f"pieces of at most {limit} steps")
        return split_long_episodes(episodes, limit)
    warnings.warn(f"{where}: {len(long)} episode(s) run past {env_name}'s step limit of {limit} steps "
                  f"(longest {max(long)}): the data flag no terminal or timeout there; pass "
                  f"--split-long-episodes to cut them at {limit} steps", stacklevel=3)
    return episodes


@dataclass
class _Raw:
    """Episodes read for a spec plus what is needed to label them."""

    episodes: list[Episode]
    attrs: dict[str, Any]
    files: list[Path]
    notes: list[str]
    hint: str  # names the env when nothing else does
    label: str
    minari: bool = False
    ref: tuple[float, float, str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _load_raw(text: str, download: bool) -> _Raw:
    """Read the episodes a spec names."""
    path = Path(text).expanduser()
    if path.exists() or path.suffix.lower() in HDF5_SUFFIXES + PKL_SUFFIXES:
        if path.is_dir():
            raise DatasetError(f"{path} is a folder; pass a .hdf5 or .pkl file, or {SPEC_FORMS}")
        if not path.exists():
            raise DatasetNotFoundError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix in PKL_SUFFIXES:
            episodes, attrs = read_pkl(path)
        elif suffix in HDF5_SUFFIXES:
            episodes, attrs = read_hdf5(path)
        else:
            raise DatasetError(f"{path}: unknown file type {suffix!r}; expected .hdf5/.h5 or .pkl")
        kind = "stand-in" if _is_standin_data(path.name, attrs) else "file"
        return _Raw(episodes, attrs, [path], [], path.name, f"{path.name} ({kind})")
    key = text.strip()
    if key.lower() in catalog.DEFAULT_ALIASES:
        return _Raw(*catalog.load_embedded(), "hopper", "hopper medium-replay stand-in sample (embedded)")
    if catalog.is_standin_id(key):
        env, kind = key[: -len("-standin")].split("-", 1)
        return _Raw(*catalog.load_standin(key), env, f"{env} {kind} stand-in")
    did = d4rl.parse_d4rl_id(key)
    if did is not None:
        episodes, attrs, files, notes = d4rl.load_d4rl(did, download=download)
        standin = _is_standin_data(files[0].name, attrs)
        label = f"{did} (stand-in file, not the published data)" if standin else f"D4RL {did}"
        return _Raw(episodes, attrs, files, notes, did.env, label)
    if "/" in key:
        episodes, info, data_path = load_minari(key, download=download)
        raw = _Raw(episodes, {"env_id": info.get("eval_env_id") or info.get("env_id")}, [Path(data_path)], [],
                   key, f"Minari {key}", minari=True, metadata=info)
        if info.get("ref_min_score") is not None and info.get("ref_max_score") is not None:
            raw.ref = (float(info["ref_min_score"]), float(info["ref_max_score"]), MINARI_REF_SOURCE)
        else:
            raw.notes.append("this Minari dataset carries no reference returns; normalized scores use D4RL's")
        return raw
    raise DatasetNotFoundError(f"unrecognised dataset spec {text!r}: expected {SPEC_FORMS}")


def load_dataset(
    spec: str | Path,
    env: str | None = None,
    *,
    observe: str | ObservationFilter = "full",
    seed: int = 0,
    download: bool = True,
    split_long: bool = False,
) -> TrajectoryDataset:
    """Load, validate and label a dataset; apply the observation filter ``observe`` to it.

    Episodes longer than the environment's step limit (data without terminal or timeout flags there) are
    cut at the limit with ``split_long``, else kept whole with a warning.

    ``env`` names the environment ("hopper") or the gymnasium id to evaluate in ("Hopper-v5")
    when it cannot be inferred or should be overridden. ``seed`` seeds a noisy filter. The
    returned dataset's ``observe`` is the filter to pass to ``make_vector_env`` for evaluation.
    """
    filt = ObservationFilter.parse(observe)  # fail on a bad filter before reading anything
    text = str(spec)
    raw = _load_raw(text, download)
    where = ", ".join(str(f) for f in raw.files) or text
    attrs_env_id = raw.attrs.get("env_id") if isinstance(raw.attrs.get("env_id"), str) else None
    env_name, env_id = _resolve_env(env, [raw.hint], attrs_env_id, raw.minari, where)
    _check_dims(raw.episodes, env_name, env_id, where)
    episodes = _within_step_limit(raw.episodes, env_name, split_long, where, raw.notes)
    metadata = {k: v for k, v in raw.attrs.items() if isinstance(v, (str, int, float, bool))}
    metadata.update(raw.metadata)
    ds = TrajectoryDataset(
        episodes=episodes,
        name=text,
        label=raw.label,
        env_name=env_name,
        env_id=env_id,
        ref_scores=raw.ref,
        source=where,
        notes=tuple(raw.notes),
        metadata=metadata,
    )
    return filt.apply_dataset(ds, seed=seed)
