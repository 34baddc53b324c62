"""D4RL ids: file names, where files are looked for, download URLs and loading."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from envs import download as _download
from envs.episodes import Episode
from envs.errors import DatasetNotFoundError
from envs.readers import read_hdf5

ENVS = ("halfcheetah", "hopper", "walker2d")
KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay")
VERSIONS = ("v1", "v2")
BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
_ID_RE = re.compile(rf"^({'|'.join(ENVS)})-({'|'.join(KINDS)})-(v\d+)$")


@dataclass(frozen=True)
class D4RLId:
    """A parsed D4RL gym-mujoco dataset id such as ``hopper-medium-replay-v2``."""

    env: str
    kind: str
    version: str

    def __str__(self) -> str:
        return f"{self.env}-{self.kind}-{self.version}"

    @property
    def filename(self) -> str:
        """D4RL's own file name, e.g. hopper_medium_replay-v2.hdf5."""
        return f"{self.env}_{self.kind.replace('-', '_')}-{self.version}.hdf5"

    @property
    def url(self) -> str:
        """D4RL's public download URL."""
        return f"{BASE_URL}/gym_mujoco_{self.version}/{self.filename}"

    def part(self, kind: str) -> D4RLId:
        """The same env and version with another kind (e.g. the medium part of medium-expert)."""
        return D4RLId(self.env, kind, self.version)


def parse_d4rl_id(text: str) -> D4RLId | None:
    """Parse ``env-kind-vN``; None if it does not look like a D4RL gym-mujoco id."""
    m = _ID_RE.match(text.strip())
    if not m:
        return None
    did = D4RLId(*m.groups())
    if did.version not in VERSIONS:
        raise ValueError(
            f"D4RL id {text!r}: version {did.version} is not supported (use {' or '.join(VERSIONS)}; "
            f"for other files pass the .hdf5 path)"
        )
    return did


def d4rl_dir() -> Path:
    """Where D4RL files live: $D4RL_DATASET_DIR, else ~/.d4rl/datasets (D4RL's own default)."""
    env = os.environ.get("D4RL_DATASET_DIR")
    return Path(env).expanduser() if env else Path.home() / ".d4rl" / "datasets"


def local_path(did: D4RLId) -> Path:
    """The path a D4RL file is looked for (and downloaded to)."""
    return d4rl_dir() / did.filename


def is_present(did: D4RLId) -> bool:
    """True when the file, or for medium-expert both its parts, is on disk."""
    if local_path(did).is_file():
        return True
    return did.kind == "medium-expert" and all(
        local_path(did.part(k)).is_file() for k in ("medium", "expert")
    )


_HINT = "Or set $D4RL_DATASET_DIR to the folder that holds D4RL's .hdf5 files."


def ensure_file(did: D4RLId, download: bool = True) -> Path:
    """The local file for ``did``, downloading it when absent and allowed."""
    path = local_path(did)
    if path.is_file():
        return path
    if not download:
        raise DatasetNotFoundError(
            f"D4RL dataset {did} not found at {path} (downloads disabled).\n"
            f"  Fetch it from {did.url} and place it there. {_HINT}"
        )
    return _download.fetch_or_explain(did.url, path, f"D4RL {did}", _HINT)


def load_d4rl(did: D4RLId, download: bool = True) -> tuple[list[Episode], dict, list[Path], list[str]]:
    """Episodes, file attributes, files read and notes for a D4RL id.

    medium-expert is D4RL's medium file followed by its expert file: when only those two are on
    disk they are concatenated (each split into episodes on its own).
    """
    if did.kind == "medium-expert" and not local_path(did).is_file():
        parts = [local_path(did.part(k)) for k in ("medium", "expert")]
        if all(p.is_file() for p in parts):
            eps_m, attrs = read_hdf5(parts[0])
            eps_e, _ = read_hdf5(parts[1])
            note = f"medium-expert = {parts[0].name} + {parts[1].name} (concatenated)"
            return eps_m + eps_e, attrs, parts, [note]
    path = ensure_file(did, download=download)
    episodes, attrs = read_hdf5(path)
    return episodes, attrs, [path], []
