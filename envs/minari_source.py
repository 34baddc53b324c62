"""Minari datasets (optional extra): episodes carry T+1 observations; the last one is dropped."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from envs.episodes import Episode, episode_from_arrays
from envs.errors import DatasetError, DatasetNotFoundError, optional_import

MINARI_REF_SOURCE = "Minari dataset reference returns (ref_min_score / ref_max_score)"


def _import_minari():
    return optional_import("minari", "minari", "loading Minari datasets")


def _minari_download(minari, dataset_id: str) -> None:
    """minari.download_dataset; a separate name so tests can replace the network."""
    minari.download_dataset(dataset_id)


def _spec_id(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "id"):
        return str(value.id)
    if isinstance(value, str):
        try:
            return str(json.loads(value).get("id")) or None
        except (ValueError, AttributeError):
            return None
    if isinstance(value, dict):
        return value.get("id")
    return None


def load_minari(dataset_id: str, download: bool = True) -> tuple[list[Episode], dict[str, Any], str]:
    """Episodes, metadata (env ids, reference scores) and the local data path of a Minari dataset."""
    minari = _import_minari()
    from minari.storage.datasets_root_dir import get_dataset_path

    where = get_dataset_path(dataset_id)
    hint = (f"Run `minari download {dataset_id}` on a machine with network access and copy the folder "
            f"to {where} (or set $MINARI_DATASETS_PATH to the folder that holds it).")
    try:
        mds = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        if not download:
            raise DatasetNotFoundError(f"Minari dataset {dataset_id} is not at {where} (downloads "
                                       f"disabled). {hint}")
        try:
            _minari_download(minari, dataset_id)
            mds = minari.load_dataset(dataset_id, download=False)
        except Exception as exc:  # noqa: BLE001 - minari raises many kinds (network, auth, missing extras)
            raise DatasetNotFoundError(
                f"Minari dataset {dataset_id} is not at {where} and could not be downloaded "
                f"({type(exc).__name__}: {exc}).\n  {hint}"
            ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to open means an unreadable dataset
        raise DatasetError(f"Minari dataset {dataset_id} at {where} cannot be read "
                           f"({type(exc).__name__}: {exc})") from None

    meta = dict(mds.storage.metadata)
    episodes = []
    for i, ep in enumerate(mds.iterate_episodes()):
        loc = f"Minari {dataset_id} episode {ep.id if hasattr(ep, 'id') else i}"
        obs = ep.observations
        if not isinstance(obs, np.ndarray):
            raise DatasetError(f"{loc}: observations are {type(obs).__name__}; only Box "
                               "observations are supported")
        if len(obs) != len(ep.rewards) + 1:
            raise DatasetError(
                f"{loc}: expected T+1 = {len(ep.rewards) + 1} observations for {len(ep.rewards)} "
                f"steps, got {len(obs)}"
            )
        episodes.append(episode_from_arrays(
            {"observations": obs[:-1], "actions": ep.actions, "rewards": ep.rewards,
             "terminals": ep.terminations, "timeouts": ep.truncations}, loc))
    if not episodes:
        raise DatasetError(f"Minari dataset {dataset_id}: dataset is empty (0 episodes)")
    info = {
        "env_id": _spec_id(meta.get("env_spec")) or _spec_id(mds.spec.env_spec),
        "eval_env_id": _spec_id(meta.get("eval_env_spec")),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        "minari_version": meta.get("minari_version"),
    }
    return episodes, info, str(mds.spec.data_path)
