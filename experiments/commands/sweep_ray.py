"""`dt-attn sweep --backend ray`: every cell a Ray task on a cluster (pip install 'dt-attn[ray]').

A task runs ``experiments.commands.sweep.run_cell``, the local pool's own cell body, in a fresh worker process
that holds the resources the cell declares (--cpus-per-cell, --gpus-per-cell). --address auto|HOST:PORT joins
a running cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the others); without it
the sweep starts a Ray instance on this machine for its own run and stops it at the end.

Run folders live under the sweep's --out-dir, which every node must see at the same path (a shared
filesystem): the sweep leaves a token file there, and a task whose node cannot read it fails its cell with
an error naming the node, before it writes anything. Ctrl-C (or SIGTERM) cancels the tasks and kills their
worker processes; each cell keeps its last checkpoint, and rerunning the command, on either backend,
skips finished cells and resumes the others.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agents.config import TrainConfig
from envs.errors import optional_import

ROOT_TOKEN_PREFIX = ".dt-attn-sweep-root-"  # + a token per sweep run: concurrent sweeps do not clash


def require_ray() -> Any:
    """The ray module, or a one-line error saying how to install it."""
    return optional_import("ray", "ray", "--backend ray")


def root_problem(out_dir: Path, token: str) -> str | None:
    """None when this process sees the sweep's output root as the driver marked it, else why not."""
    if (out_dir / f"{ROOT_TOKEN_PREFIX}{token}").is_file():
        return None
    seen = "does not exist there" if not out_dir.is_dir() else "exists there but is another folder"
    return (f"node {socket.gethostname()} cannot see the sweep's output root {out_dir} (the path {seen}); "
            "put --out-dir on a filesystem that every node mounts at the same path")


def cell_task(cfg: TrainConfig, train_fn: Callable[..., dict] | None, out_dir: str,
              token: str) -> Iterator[dict[str, Any]]:
    """The body of a cell's Ray task (a generator): reports its start, then the result of ``run_cell``, or a
    failure when this node cannot see the output root."""
    from experiments.commands.sweep import run_cell

    yield {"started": socket.gethostname()}
    problem = root_problem(Path(out_dir), token)
    if problem is not None:
        yield {"ok": False, "error": problem, "seconds": 0.0}
        return
    yield run_cell(cfg, train_fn)


def _join_error(address: str, why: str) -> ValueError:
    """The one-line error of a cluster that could not be joined."""
    return ValueError(
        f"could not join the Ray cluster at {address} ({why}); start one with `ray start --head`, or leave "
        "out --address for a Ray instance of this sweep's own. A cluster with token authentication needs "
        "RAY_AUTH_MODE=token and its token (~/.ray/auth_token or RAY_AUTH_TOKEN) here too")


def _probe_address(address: str, timeout: float) -> None:
    """Refuse at once a HOST:PORT where nothing accepts a connection (Ray itself retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=min(timeout, 5.0)).close()
    except OSError as exc:
        raise _join_error(address, exc.strerror or str(exc) or type(exc).__name__) from None


class _Expired(BaseException):
    """A deadline passed (a BaseException: Ray's connection retries catch every Exception)."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Within the block (main thread only), raise _Expired after ``seconds`` of wall time."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _connect(ray: Any, address: str | None, timeout: float) -> bool:
    """Join the cluster at ``address`` within ``timeout`` seconds or start a local Ray instance; True when
    this call connected (and the sweep must disconnect), False when this process was connected already."""
    if ray.is_initialized():
        return False
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    kwargs: dict[str, Any] = {"log_to_driver": False}  # a cell's output goes to its sweep.log
    if address is None:
        kwargs["include_dashboard"] = False
        ray.init(address="local", **kwargs)
    else:
        _probe_address(address, timeout)
        try:
            with _deadline(timeout):
                ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            raise _join_error(address, str(exc).strip().splitlines()[0]) from None
        except _Expired:
            raise _join_error(address, f"no answer within {timeout:g} s; --connect-timeout sets the "
                                       "wait") from None
    if main:  # ray.init replaces SIGTERM's handler with sys.exit; the sweep's own stops the tasks
        signal.signal(signal.SIGTERM, handler)
    return True


def run_ray_cells(cells: list, cfg: Any, train_fn: Callable[..., dict] | None,
                  started: Callable[[Any], None], record: Callable[[Any, dict], None]) -> None:
    """Run ``cells`` (experiments.commands.sweep.Cell) as Ray tasks per ``cfg`` (a SweepConfig);
    ``started(cell)`` when a task begins, ``record(cell, result)`` when it ends (a failed or lost task gives
    ok False)."""
    ray = require_ray()
    out_dir = Path(cfg.out_dir).resolve()
    connected = _connect(ray, cfg.address, cfg.connect_timeout)
    token = uuid.uuid4().hex
    marker = out_dir / f"{ROOT_TOKEN_PREFIX}{token}"
    pending: dict[Any, Any] = {}
    try:
        marker.write_text(f"{out_dir}\n")
        task = ray.remote(max_calls=1,  # a fresh process per cell, as in the local pool
                          max_retries=0,  # a lost cell is reported; a rerun resumes it
                          )(cell_task).options(num_cpus=cfg.cpus_per_cell, num_gpus=cfg.gpus_per_cell)
        for cell in cells:
            # absolute run folders: a worker starts in a directory of Ray's choosing
            absolute = dataclasses.replace(cell.cfg, run_dir=str(Path(cell.cfg.run_dir).resolve()))
            pending[task.remote(absolute, train_fn, str(out_dir), token)] = cell
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for gen in ready:
                cell = pending[gen]
                try:
                    item = ray.get(next(gen))
                except StopIteration:  # the task ended without yielding its result
                    item = {"ok": False, "error": "the Ray task ended without a result; rerun "
                                                  "the sweep to retry"}
                except Exception as exc:  # noqa: BLE001 - the worker died (killed, out of memory, node lost)
                    last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                    item = {"ok": False, "error": f"Ray task failed: {type(exc).__name__}: {last}; rerun the "
                                                  "sweep to retry (finished cells are skipped)"}
                if "started" in item:
                    started(cell)
                    continue
                del pending[gen]
                record(cell, item)
    except BaseException:
        for gen in pending:  # Ctrl-C, SIGTERM, or an error here: stop every task still queued or running
            ray.cancel(gen, force=True)
        raise
    finally:
        try:
            os.unlink(marker)
        except OSError:
            pass
        if connected:
            ray.shutdown()
