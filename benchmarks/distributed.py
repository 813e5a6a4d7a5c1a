"""Benchmark data-parallel training on this machine: one process against two, one thread each.

Every setting trains with annlib.train.fit in freshly spawned processes on the same real EMNIST
images and the same global batch, and reports fit's own training speed (images of all processes
over the pure step seconds of the slowest). A third setting, one process with as many threads as
two processes have, shows what the same cores give without data parallelism. Writes a CSV.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from annlib import distributed
from annlib.data import build_study, subsample
from annlib.models import count_parameters, create_model
from annlib.paths import project_root
from annlib.records import environment, save_csv
from annlib.train import TrainConfig, fit

MODELS = ("lenet5", "vgg-small")
GLOBAL_BATCH = 256
# (processes, threads per process); the first is the baseline every ratio is taken against.
SETTINGS = ((1, 1), (2, 1), (1, 2))
ALL_REDUCE_REPEATS = 20
# Epochs of one setting that differ by more than this factor mean the machine was busy meanwhile.
NOISY_SPREAD = 1.25


@dataclass(frozen=True)
class Effort:
    """How much training each measurement does."""

    images: int  # training images per epoch, shared by all processes
    epochs: int  # the median epoch is reported


FULL = Effort(images=8192, epochs=3)
QUICK = Effort(images=1024, epochs=1)


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, threads, port, model_name, train, val, config, out) -> None:
    """Train in one process of a group (or alone), then time a gradient-sized all-reduce."""
    torch.set_num_threads(threads)
    if world > 1:
        os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        os.environ |= {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
        distributed.init_from_env(backend="gloo", timeout=120)
    torch.manual_seed(0)
    model = create_model(model_name)
    history = fit(model, train, val, config)

    all_reduce_s = []
    if world > 1:
        grads = torch.zeros(count_parameters(model))
        for _ in range(ALL_REDUCE_REPEATS + 2):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(grads)
            all_reduce_s.append(time.perf_counter() - start)
        all_reduce_s = all_reduce_s[2:]
    distributed.shutdown()
    if rank == 0:
        torch.save({"history": history, "all_reduce_s": all_reduce_s}, out)


def measure(model: str, processes: int, threads: int, train, val, effort: Effort) -> dict:
    """Return images/s and step and all-reduce times of one setting, from fresh processes."""
    config = TrainConfig(
        epochs=effort.epochs, batch_size=GLOBAL_BATCH, precision="fp32", patience=None
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.pt"
        args = (processes, threads, free_port(), model, train, val, config, out)
        mp.start_processes(worker, args, nprocs=processes, start_method="spawn")
        result = torch.load(out, weights_only=False)

    epochs = result["history"]["epochs"]
    steps = epochs[0]["train_images"] // GLOBAL_BATCH
    speeds = [r["train_images"] / r["train_seconds"] for r in epochs]
    step_s = statistics.median(r["train_seconds"] for r in epochs) / steps
    all_reduce_s = statistics.median(result["all_reduce_s"]) if result["all_reduce_s"] else 0.0
    return {
        "model": model,
        "processes": processes,
        "threads_per_process": threads,
        "images_per_s": statistics.median(speeds),
        "spread": max(speeds) / min(speeds),
        "step_ms": step_s * 1e3,
        "all_reduce_ms": all_reduce_s * 1e3,
        "parameters": count_parameters(create_model(model)),
        "epochs": len(epochs),
        "images_per_epoch": epochs[0]["train_images"],
    }


def report(table: pd.DataFrame) -> None:
    """Print each setting's median epoch speed against 1 process x 1 thread, then its limits."""
    header = f"{'model':10s} {'setting':26s} {'images/s':>9s} {'vs 1x1':>7s} {'step ms':>8s}"
    print(header + f" {'max/min':>8s}")
    for _, r in table.iterrows():
        setting = (
            f"{r.processes} process{'es' if r.processes > 1 else ''} x {r.threads_per_process}"
        )
        setting += f" thread{'s' if r.threads_per_process > 1 else ''}"
        print(
            f"{r.model:10s} {setting:26s} {r.images_per_s:9.0f} {r.ratio:7.2f} {r.step_ms:8.1f} "
            f"{r.spread:8.2f}"
        )
    if (table.spread > NOISY_SPREAD).any():
        print(
            f"Some settings' epochs differ by more than {NOISY_SPREAD}x (max/min): the machine was "
            "busy with other work meanwhile, so their ratios are rough."
        )
    print()
    for _, r in table[table.processes > 1].iterrows():
        megabytes = r.parameters * 4 / 2**20
        print(
            f"{r.model}: 2 processes run {r.ratio:.2f}x one; all-reducing its {megabytes:.2f} MB "
            f"of gradients takes {r.all_reduce_ms:.2f} ms, {r.all_reduce_ms / r.step_ms:.1%} "
            f"of a {r.step_ms:.1f} ms step."
        )
    print(
        "What limits scaling here: the two processes need both cores to themselves (each step "
        "waits for the slower one, so any other work on the machine slows both) and share caches "
        "and memory bandwidth; the gradient all-reduce above costs little, and on a small model "
        "the per-step costs that do not halve with the batch (Python, optimizer, kernel launches) "
        "weigh the most."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None, help="EMNIST folder")
    parser.add_argument("--quick", action="store_true", help="few images, one epoch")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default=None, help="CSV path (default by --quick)")
    args = parser.parse_args()
    effort = QUICK if args.quick else FULL
    default = (
        "runs/quick/benchmark_distributed.csv"
        if args.quick
        else "results/benchmark_distributed.csv"
    )
    out = Path(args.out) if args.out else project_root() / default

    study = build_study("bymerge-small", args.data_dir)
    train = subsample(study.X_train, study.y_train, effort.images, seed=0)
    val = subsample(study.X_val, study.y_val, 256, seed=0)
    print(
        f"{effort.images} training images, global batch {GLOBAL_BATCH}, {effort.epochs} "
        f"epoch(s), fp32, {os.cpu_count()} CPUs\n"
    )

    rows = [
        measure(model, processes, threads, train, val, effort)
        for model in args.models
        for processes, threads in SETTINGS
    ]
    table = pd.DataFrame(rows)
    baseline = table[(table.processes == 1) & (table.threads_per_process == 1)]
    table["ratio"] = table.images_per_s / table.model.map(baseline.set_index("model").images_per_s)
    report(table)

    env = environment()
    table = table.assign(**{k: env[k] for k in ("cpu", "cpu_count", "torch")})
    save_csv(out, table)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
