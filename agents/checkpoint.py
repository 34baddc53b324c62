"""Checkpoints: atomic save (a crash mid-write never destroys the previous file), lookup and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from agents.atomic import atomic_write
from agents.upgrade import upgrade_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"


class _RecordingWriter:
    """A binary file that remembers the OSError of a failed write: torch.save reports a full disk as a
    RuntimeError about zip positions, the OSError says what happened."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.error = fh, None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save ``payload`` to ``path`` atomically (temp file in the same folder, then rename); a failed
    write raises ``agents.atomic.WriteError`` and leaves the previous checkpoint intact."""

    def write(fh: Any) -> None:
        out = _RecordingWriter(fh)
        try:
            torch.save(payload, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None
            raise

    atomic_write(Path(path), write)


def non_finite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold NaN or infinite values."""
    return [name for name, t in state.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory or a .pt file -> the checkpoint file; clear error when missing."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {p}: pass a run directory that contains {CHECKPOINT_NAME} "
            "(written by `dt-attn train`) or the path of a checkpoint file"
        )
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint``, of any format, as the current one
    (``agents.upgrade``); a damaged file gives a clear error."""
    p = resolve_checkpoint(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ValueError(f"checkpoint {p} could not be read ({type(exc).__name__}: {exc}); it "
                         "may be truncated") from exc
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise ValueError(f"{p} is not a dt-attn checkpoint (missing 'model'/'config' entries)")
    return upgrade_checkpoint(payload, str(p))
