"""Short ids for the local stand-in datasets and the embedded sample, and the list of known datasets."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from envs import d4rl
from envs.episodes import Episode
from envs.errors import DatasetNotFoundError
from envs.readers import read_hdf5

EMBEDDED_ID = "hopper-medium-replay-standin-sample"
DEFAULT_ALIASES = ("default", EMBEDDED_ID)
DATA_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED_FILE = DATA_DIR / f"{EMBEDDED_ID}.hdf5"
_STANDIN_RE = re.compile(rf"^({'|'.join(d4rl.ENVS)})-([a-z-]+)-standin$")
MINARI_KINDS = ("medium-v0", "expert-v0", "simple-v0")


def standin_dir() -> Path:
    """$DT_ATTN_STANDIN_DIR, else <repo>/../shared/datasets."""
    env = os.environ.get("DT_ATTN_STANDIN_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


def is_standin_id(text: str) -> bool:
    """True for ids like ``hopper-medium-replay-standin``."""
    return bool(_STANDIN_RE.match(text.strip()))


def standin_env(text: str) -> str:
    """The env name in a stand-in id."""
    return text.split("-", 1)[0]


def _standin_parts(sid: str) -> list[Path] | None:
    """The medium and expert files a stand-in medium-expert id is made of, or None."""
    m = _STANDIN_RE.match(sid)
    if not m or m.group(2) != "medium-expert":
        return None
    return [standin_dir() / f"{m.group(1)}-{k}-standin.hdf5" for k in ("medium", "expert")]


def standin_present(sid: str) -> bool:
    """True when the stand-in file (or both medium-expert parts) is on disk."""
    if (standin_dir() / f"{sid}.hdf5").is_file():
        return True
    parts = _standin_parts(sid)
    return bool(parts) and all(p.is_file() for p in parts)


def load_standin(sid: str) -> tuple[list[Episode], dict, list[Path], list[str]]:
    """Episodes, attributes, files and notes of a stand-in id (medium-expert = medium + expert)."""
    path = standin_dir() / f"{sid}.hdf5"
    if path.is_file():
        eps, attrs = read_hdf5(path)
        return eps, attrs, [path], []
    parts = _standin_parts(sid)
    if parts and all(p.is_file() for p in parts):
        eps_m, attrs = read_hdf5(parts[0])
        eps_e, _ = read_hdf5(parts[1])
        note = f"medium-expert = {parts[0].name} + {parts[1].name} (concatenated)"
        return eps_m + eps_e, attrs, parts, [note]
    available = sorted(p.stem for p in standin_dir().glob("*-standin.hdf5")) if standin_dir().is_dir() else []
    raise DatasetNotFoundError(
        f"stand-in dataset {sid} not found: looked for {path}"
        + (f" (or {parts[0].name} + {parts[1].name})" if parts else "")
        + f".\n  Stand-ins available there: {', '.join(available) or 'none'}."
        + "\n  Set $DT_ATTN_STANDIN_DIR to the folder holding the *-standin.hdf5 files."
    )


def load_embedded() -> tuple[list[Episode], dict, list[Path], list[str]]:
    """Episodes and attributes of the sample shipped inside the package."""
    if not EMBEDDED_FILE.is_file():
        raise DatasetNotFoundError(
            f"the embedded default dataset {EMBEDDED_FILE} is missing from this installation; recreate it "
            "with `python -m experiments.commands.make_embedded_dataset` from the repository root"
        )
    eps, attrs = read_hdf5(EMBEDDED_FILE)
    return eps, attrs, [EMBEDDED_FILE], []


def minari_root() -> Path:
    """Minari's dataset folder: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".minari" / "datasets"


@dataclass(frozen=True)
class CatalogEntry:
    """One dataset id the suite knows, where it is looked for and whether it is there."""

    id: str
    kind: str  # "embedded", "stand-in", "D4RL", "Minari"
    locations: tuple[Path, ...]
    present: bool
    note: str = ""


def known_datasets() -> list[CatalogEntry]:
    """Every dataset id `dt-attn data` lists, in display order."""
    entries = [
        CatalogEntry("default", "embedded", (EMBEDDED_FILE,), EMBEDDED_FILE.is_file(),
                     f"alias of {EMBEDDED_ID}: a sample of the hopper medium-replay stand-in"),
    ]
    sdir = standin_dir()
    sids = {f"{e}-{k}-standin" for e in ("halfcheetah", "hopper") for k in ("medium-replay", "medium",
                                                                            "expert", "medium-expert")}
    if sdir.is_dir():
        sids |= {p.stem for p in sdir.glob("*-standin.hdf5")}
    for sid in sorted(sids):
        parts = _standin_parts(sid)
        locs = (sdir / f"{sid}.hdf5",) + (tuple(parts) if parts else ())
        note = "= medium + expert stand-ins" if parts else ""
        entries.append(CatalogEntry(sid, "stand-in", locs, standin_present(sid), note))
    for env in d4rl.ENVS:
        for kind in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            did = d4rl.D4RLId(env, kind, "v2")
            locs = (d4rl.local_path(did),)
            note = ""
            if kind == "medium-expert":
                locs += (d4rl.local_path(did.part("medium")), d4rl.local_path(did.part("expert")))
                note = "or medium + expert files"
            entries.append(CatalogEntry(str(did), "D4RL", locs, d4rl.is_present(did), note))
    root = minari_root()
    for env in d4rl.ENVS:
        for kind in MINARI_KINDS:
            mid = f"mujoco/{env}/{kind}"
            entries.append(CatalogEntry(mid, "Minari", (root / mid,), (root / mid / "data").is_dir(),
                                        "needs the [minari] extra"))
    return entries
