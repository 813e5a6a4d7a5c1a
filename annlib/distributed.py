"""Data-parallel training across processes: the process group, rank helpers and a launcher.

Every helper is a no-op (or returns the single-process answer) when no process group is active,
so the training loop calls them unconditionally and behaves as before in a single process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from annlib.paths import project_root

if TYPE_CHECKING:
    from annlib.data.studies import Study

log = logging.getLogger(__name__)

# The variables torchrun sets for each worker; init_from_env needs all of them.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# The train options of the command line that launch() passes on.
LAUNCH_OPTIONS = ("epochs", "precision", "seed", "batch_size", "lr")


def requested() -> bool:
    """Return True when the environment describes a process group, as torchrun's does."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def active() -> bool:
    """Return True when this process belongs to an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Return this process's global rank, 0 without a process group."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Return the number of processes training together, 1 without a process group."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Return True on rank 0, the one process that writes logs, histories and checkpoints."""
    return rank() == 0


def local_rank() -> int:
    """Return this process's rank on its own machine, as torchrun numbers it."""
    return int(os.environ.get("LOCAL_RANK", 0))


def default_backend() -> str:
    """Return nccl where CUDA is available, else gloo."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def device() -> torch.device:
    """Return the device this process trains on: its own GPU under nccl, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def init_from_env(backend: str | None = None, timeout: float = 600.0) -> bool:
    """Join the process group torchrun's variables describe; return False when there is none.

    timeout bounds how long a collective waits for a missing peer before it raises, so a dead
    worker stops the others instead of hanging them. On ranks other than 0, annlib's loggers are
    set to warnings only.
    """
    if active():
        return True
    if not requested():
        return False
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    if not is_main():
        logging.getLogger("annlib").setLevel(logging.WARNING)  # rank 0 alone logs progress
    log.info("%d processes joined a %s process group", world_size(), backend)
    return True


def shutdown() -> None:
    """Leave the process group, if there is one."""
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here."""
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Return rank 0's obj on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=device())
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Return every rank's obj, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Return the sum (or max) over ranks of each value, in float64, on every rank."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


def local_batch(global_batch: int) -> int:
    """Return the per-process share of a global batch, or raise if it does not split evenly."""
    world = world_size()
    if global_batch % world:
        raise ValueError(
            f"The global batch of {global_batch} does not split evenly over {world} processes: "
            f"make batch_size a multiple of {world}."
        )
    return global_batch // world


def shard(n: int) -> slice:
    """Return this rank's contiguous share of n items (the first n % world ranks get one more)."""
    world, r = world_size(), rank()
    size, extra = divmod(n, world)
    start = r * size + min(r, extra)
    return slice(start, start + size + (r < extra))


def wrap(model: nn.Module) -> nn.Module:
    """Return the model wrapped in DistributedDataParallel, or the model itself without a group."""
    if not active():
        return model
    ids = [local_rank()] if device().type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    DistributedDataParallel broadcasts them before each training forward pass, so after the last
    step every rank holds statistics of its own last batch; evaluation needs one model.
    """
    if world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def launch(
    nproc: int,
    model: str,
    study: str | Study | None = None,
    profile: str = "cpu",
    data_dir: str | Path | None = None,
    tag: str = "",
    retrain: bool = False,
    output_dir: str | Path | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a registry model on nproc local processes with torchrun; return its saved history.

    The workers run `python -m annlib train` and save under the same paths as train_model, so the
    run is cached and resumable like any other. threads sets each worker's OMP_NUM_THREADS
    (torchrun's default is 1 when nproc > 1). overrides may be epochs, precision, seed, batch_size
    (the global batch) and lr.
    """
    from annlib.data.studies import default_study
    from annlib.experiments import history_path, run_name
    from annlib.records import load_json

    unknown = set(overrides) - set(LAUNCH_OPTIONS)
    if unknown:
        raise ValueError(f"launch passes on only {', '.join(LAUNCH_OPTIONS)}, not {unknown}.")
    name = getattr(study, "name", study) or default_study(data_dir)

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", "-m", "annlib", "train", model]
    cmd += ["--study", name, "--profile", profile, "--tag", tag]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if output_dir is not None:
        cmd += ["--output-dir", str(output_dir)]
    if retrain:
        cmd.append("--retrain")
    for key, value in overrides.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project_root()), env.get("PYTHONPATH")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)

    log.info("launching %s", " ".join(cmd))
    output = run_group(cmd, env, timeout)
    log.info("workers' output:\n%s", output)
    return load_json(history_path(name, profile, run_name(model, tag), output_dir))


def run_group(cmd: list[str], env: dict[str, str], timeout: float | None) -> str:
    """Run a command in its own process group and return its output; raise if it fails.

    On a timeout the whole group (torchrun and its workers) is terminated, so no worker is left
    behind holding a port or a core.
    """
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        raise TimeoutError(f"workers still running after {timeout} s:\n{tail(output)}") from None
    if proc.returncode:
        raise RuntimeError(f"torchrun exited with code {proc.returncode}:\n{tail(output)}")
    return output


def kill_group(pid: int, sig: int) -> None:
    """Send a signal to the process group led by pid, if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def tail(text: str, lines: int = 40) -> str:
    """Return the last lines of a text."""
    return "\n".join(text.splitlines()[-lines:])
