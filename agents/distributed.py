"""Multi-process training with torch DistributedDataParallel (DDP), launched by torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in every process it starts;
``process_group`` joins them (gloo on CPU, nccl on CUDA, one GPU per process) and ``current`` tells the
Trainer where it stands. Without WORLD_SIZE (or with WORLD_SIZE=1) a run is the plain one-process run and
nothing here does anything.

The rules a DDP run follows, so that N processes train the model one process would:
* every rank draws the same global batch of segment end points from the run's one seeded sampler stream and
  keeps its own slice (``batch_slice``): the ranks' segments are distinct draws whose union is exactly the
  batch one process draws, the sampler state is the same on every rank, and a run resumed with another
  number of processes re-splits the same stream;
* the loss is normalized by the global batch's real (unpadded) targets, all-reduced (``global_loss``), so
  DDP's averaged gradient equals the one-process gradient;
* rank 0 alone reads and writes the run folder (checkpoints, TensorBoard, results) and runs evaluations;
  other ranks receive what it read (``on_main``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")

# Ranks wait in a collective while rank 0 evaluates (--eval-every) or writes a checkpoint; a whole-episode
# evaluation can take many minutes, longer than nccl's 10-minute default.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Dist:
    """This process's place in a DDP run (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0, the one that writes files."""
        return self.rank == 0


def current() -> Dist:
    """The DDP run this process belongs to (``process_group``), or a one-process Dist."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank is gone: torch's DistError, or the
    plain RuntimeError that gloo's and nccl's transports raise ("Connection reset by peer", ...)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(m in text for m in ("gloo", "NCCL", "Connection reset",
                                                                      "Connection closed"))


def launched_world_size() -> int:
    """The number of processes torchrun started for this run (1 when not started by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with "
                         "torchrun") from None


def resolve_device(name: str) -> torch.device:
    """The device a --device value names: 'auto' is cuda when available, else cpu; a clear error for cuda
    without a CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but no CUDA device is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None


@contextmanager
def process_group(device: str) -> Iterator[Dist]:
    """Within the block, this process is one rank of the torchrun-launched DDP run (backend nccl when
    ``device`` is cuda, or auto with a GPU; gloo otherwise); a no-op for one process."""
    world = launched_world_size()
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed; run one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process with LOCAL_RANK {local_rank} finds only {torch.cuda.device_count()} "
                             "GPU(s); give torchrun --nproc-per-node at most the number of GPUs per node")
        torch.cuda.set_device(local_rank)  # nccl needs each process's GPU chosen before the group forms
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


@contextmanager
def local_main_first(d: Dist) -> Iterator[None]:
    """Within the block, each node's local rank 0 goes first and the node's other ranks after it, so that one
    process per node downloads a dataset the others then read (every rank enters the block)."""
    if d.enabled and d.local_rank != 0:
        dist.barrier()
    yield
    if d.enabled and d.local_rank == 0:
        dist.barrier()


def device_for(device: torch.device, d: Dist) -> torch.device:
    """The device this rank trains on: under DDP, "cuda" means this process's own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and device.index is None and d.enabled:
        return torch.device("cuda", d.local_rank)
    return device


def batch_slice(batch_size: int, d: Dist) -> slice | None:
    """This rank's share of a global batch (the first batch_size % world_size ranks take one more); None
    (the whole batch) for one process."""
    if not d.enabled:
        return None
    if batch_size < d.world_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch, split across {d.world_size} "
                         f"processes; give at least {d.world_size} (one segment per process)")
    base, extra = divmod(batch_size, d.world_size)
    start = d.rank * base + min(d.rank, extra)
    return slice(start, start + base + (d.rank < extra))


def global_loss(error_sum: torch.Tensor, targets: torch.Tensor, d: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss over the global batch, the term to back-propagate) from this rank's summed squared error and
    its count of real target values. DDP averages gradients over ranks, so each rank back-propagates
    world_size * its error / the global count: the average is the gradient of the global loss, whatever the
    ranks' shares of padding. One process: both are error_sum / targets."""
    if not d.enabled:
        loss = error_sum / targets
        return loss, loss
    totals = torch.stack((error_sum.detach(), targets.to(error_sum.dtype)))
    dist.all_reduce(totals)  # one collective: the global error (for logging and the NaN check) and count
    return totals[0] / totals[1], error_sum * d.world_size / totals[1]


def on_main(fn: Callable[[], T], d: Dist) -> T:
    """``fn()`` run on rank 0 alone, its result (or the exception it raised) passed to every rank."""
    if not d.enabled:
        return fn()
    box: list[Any] = [None]
    if d.is_main:
        try:
            box[0] = (True, fn())
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
            box[0] = (False, exc)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def gather(obj: T, d: Dist) -> list[T]:
    """Every rank's ``obj``, in rank order (a collective: all ranks call it)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of a rank's own random stream (dropout masks) from the run's seed: for ranks above 0 (rank 0
    goes on with the run's seed, as one process does), and for every rank of a run resumed at ``step`` by
    another number of processes."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel for a DDP run (it starts every rank from rank 0's
    weights); the model itself for one process."""
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
