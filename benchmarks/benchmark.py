"""Benchmark annlib on this machine: data loading, training speed against plain PyTorch, inference.

Prints each result beside its target and writes every number to a CSV. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from annlib.data import (
    Augment,
    Batches,
    build_study,
    data_dir,
    read_images,
    read_labels,
    to_tensors,
)
from annlib.evaluate import autocast
from annlib.models import create_model
from annlib.paths import project_root
from annlib.records import bf16_native, environment, save_csv
from annlib.timing import latency_and_throughput
from annlib.train import TrainConfig, seed_everything, train_epoch, train_step

LOAD_TARGET_S = 1.0
SPEEDUP_TARGET = 2.5
OVERHEAD_TARGET = 0.10
# Passes of one side that differ by more than this factor mean the machine was busy meanwhile.
NOISY_SPREAD = 1.25
TRAIN_MODELS = ("lenet5", "vgg-small")
TARGET_MODEL = "vgg-small"
# The loop's own cost is measured where it weighs most: the model with the shortest step.
OVERHEAD_MODELS = ("lenet5",)
INFERENCE_MODELS = ("lenet5", "vgg-small", "resnet50")

# A training pass runs one side over all its images; "Run" does that, or only the first n batches.
Run = Callable[[int | None], None]


@dataclass(frozen=True)
class Effort:
    """How much work each measurement does: a full run, or a quick one that checks the wiring."""

    steps: int  # batches of 256 per timed training pass
    repeats: int  # timed passes per side; the median is reported
    warmup_steps: int  # untimed batches per side before its first timed pass
    precision_steps: int  # timed steps for the fp32 against bf16 comparison
    min_run_time: float  # seconds torch.utils.benchmark spends per inference measurement
    large_batch: int  # the throughput batch size of the inference measurements


FULL = Effort(
    steps=40, repeats=3, warmup_steps=2, precision_steps=3, min_run_time=1.0, large_batch=512
)
QUICK = Effort(
    steps=4, repeats=1, warmup_steps=1, precision_steps=1, min_run_time=0.1, large_batch=64
)


def row(kind: str, model: str, metric: str, value: float, unit: str, **extra: Any) -> dict:
    """Return one result as a CSV row."""
    return {"kind": kind, "model": model, "metric": metric, "value": value, "unit": unit, **extra}


def verdict(met: bool) -> str:
    """Return the word printed after a target."""
    return "met" if met else "MISSED"


# 1. Loading


def time_loading(root: Path, repeats: int = 3) -> tuple[list[float], int]:
    """Return seconds to read the ByMerge test images and labels, once per repeat, and the count."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_images("bymerge", "test", root)
        labels = read_labels("bymerge", "test", root)
        seconds.append(time.perf_counter() - start)
    return seconds, len(labels)


# 2. Training


class OneImage(Dataset):
    """The reference's dataset: one uint8 image at a time, as a float (1, 28, 28) in [0, 1]."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.X[i]).float().div(255.0).unsqueeze(0), int(self.y[i])


def fresh_model(name: str, config: TrainConfig, channels_last: bool) -> nn.Module:
    """Return a newly initialised model, seeded as annlib.train.fit seeds it."""
    seed_everything(config.seed)
    model = create_model(name)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def optimizer_for(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Return AdamW with the recipe's learning rate and weight decay, as fit builds it."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def scheduler_for(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Return fit's one-cycle schedule, long enough for every step this benchmark takes."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)


def reference_side(name: str, X: np.ndarray, y: np.ndarray, config: TrainConfig) -> Run:
    """Return a pass of plain PyTorch: per-image Dataset, DataLoader, float32, default layout."""
    model = fresh_model(name, config, channels_last=False)
    optimizer = optimizer_for(model, config)
    loader = DataLoader(
        OneImage(X, y),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(config.seed),
    )

    def run(steps: int | None = None) -> None:
        model.train()
        for i, (x, target) in enumerate(loader):
            if i == steps:
                break
            loss = F.cross_entropy(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def annlib_side(
    name: str, X: np.ndarray, y: np.ndarray, config: TrainConfig, augment: float, total_steps: int
) -> Run:
    """Return a pass of annlib's loop as fit runs it: Batches, Augment, train_epoch."""
    model = fresh_model(name, config, config.channels_last)
    optimizer = optimizer_for(model, config)
    scheduler = scheduler_for(optimizer, config, total_steps)
    bf16 = config.use_bf16()
    images, labels = to_tensors(X, y)

    def batches(n: int) -> Batches:
        return Batches(
            images[:n],
            labels[:n],
            config.batch_size,
            shuffle=True,
            augment=Augment(augment),
            channels_last=config.channels_last,
            drop_last=True,
            seed=config.seed,
        )

    every = batches(len(labels))

    def run(steps: int | None = None) -> None:
        chosen = every if steps is None else batches(steps * config.batch_size)
        train_epoch(model, chosen, optimizer, scheduler, config, bf16, f"annlib {name}")

    return run


def bare_side(
    name: str, X: np.ndarray, y: np.ndarray, config: TrainConfig, total_steps: int
) -> Run:
    """Return a pass of train_epoch's steps alone, over unaugmented batches built beforehand."""
    model = fresh_model(name, config, config.channels_last)
    optimizer = optimizer_for(model, config)
    scheduler = scheduler_for(optimizer, config, total_steps)
    bf16 = config.use_bf16()
    prebuilt = list(
        Batches(
            *to_tensors(X, y),
            config.batch_size,
            shuffle=True,
            augment=Augment(0.0),
            channels_last=config.channels_last,
            drop_last=True,
            seed=config.seed,
        )
    )

    def run(steps: int | None = None) -> None:
        model.train()
        for x, target in prebuilt[:steps]:
            train_step(model, x, target, optimizer, scheduler, config.label_smoothing, bf16)

    return run


def time_passes(sides: dict[str, Run], warmup_steps: int, repeats: int) -> dict[str, list[float]]:
    """Return seconds per whole training pass of each side, warmed up first.

    The sides take turns pass by pass, so a slow spell of background load is spread over them all.
    """
    for run in sides.values():
        run(warmup_steps)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            start = time.perf_counter()
            run(None)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def step_speed(name: str, x: torch.Tensor, y: torch.Tensor, bf16: bool, steps: int) -> float:
    """Return training images/s of bare steps on one channels-last batch, fp32 or bf16 autocast."""
    config = TrainConfig()
    model = fresh_model(name, config, channels_last=True).train()
    optimizer = optimizer_for(model, config)
    x = x.contiguous(memory_format=torch.channels_last)
    seconds = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with autocast(bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return len(y) / statistics.median(seconds[1:])


def benchmark_training(
    name: str, X: np.ndarray, y: np.ndarray, effort: Effort, overhead: bool
) -> dict[str, list[float]]:
    """Return seconds per pass of each side for one model (with the overhead pair if asked)."""
    config = TrainConfig()
    total_steps = effort.warmup_steps + effort.repeats * effort.steps
    sides = {
        "reference": reference_side(name, X, y, config),
        "annlib": annlib_side(name, X, y, config, config.augment, total_steps),
    }
    if overhead:
        sides["annlib_no_augment"] = annlib_side(name, X, y, config, 0.0, total_steps)
        sides["bare_steps"] = bare_side(name, X, y, config, total_steps)
    return time_passes(sides, effort.warmup_steps, effort.repeats)


# 3. Inference


def benchmark_inference(effort: Effort) -> list[dict]:
    """Return annlib.timing rows at batch 1 and a large batch, fp32, both memory formats."""
    rows = []
    for name in INFERENCE_MODELS:
        for channels_last in (False, True):
            seed_everything(0)
            model = create_model(name)
            rows += latency_and_throughput(
                model,
                name,
                large_batch=effort.large_batch,
                min_run_time=effort.min_run_time,
                channels_last=channels_last,
            )
    return rows


# Printing and recording each part


def report_loading(root: Path) -> list[dict]:
    """Time loading, print it beside its target and return its row."""
    print("\n1. Loading the ByMerge test partition (read_images + read_labels), median of 3")
    seconds, count = time_loading(root)
    load_s = statistics.median(seconds)
    runs = ", ".join(f"{s:.3f}" for s in seconds)
    print(
        f"   {count:,} images in {load_s:.3f} s (runs {runs})   "
        f"target < {LOAD_TARGET_S:g} s: {verdict(load_s < LOAD_TARGET_S)}"
    )
    return [row("load", "", "bymerge_test_seconds", load_s, "s", target=f"<{LOAD_TARGET_S:g}")]


def report_training(root: Path, effort: Effort, cpu_capability: str) -> list[dict]:
    """Run part 2: annlib against the reference, fp32 against bf16, the loop's own overhead."""
    config = TrainConfig()
    precision = "bf16" if config.use_bf16() else "fp32"
    n = effort.steps * config.batch_size
    study = build_study("bymerge-small", root)
    X, y = study.X_train[:n], study.y_train[:n]

    print(
        f"\n2. Training: {n:,} bymerge-small training images per pass, batch {config.batch_size},\n"
        f"   median of {effort.repeats} timed pass(es) per side after "
        f"{effort.warmup_steps} warm-up step(s); sides take turns pass by pass\n"
        f"   annlib:    Batches (channels_last, Augment {config.augment}) + train_epoch, "
        f"precision {config.precision!r} -> {precision}\n"
        "   reference: per-image Dataset + DataLoader(shuffle, num_workers=0), fp32, "
        "default layout,\n"
        "              no augmentation (annlib does that extra work inside its time)"
    )
    print(f"   {'model':<10} {'reference':>12} {'annlib':>12} {'ratio':>7}   target")
    rows, seconds = [], {}
    for name in TRAIN_MODELS:
        seconds[name] = benchmark_training(name, X, y, effort, name in OVERHEAD_MODELS)
        rows += report_speedup(name, seconds[name], n)
    print(
        f"   The {SPEEDUP_TARGET:g}x target assumed a CPU that runs bf16 natively (AVX-512 BF16 "
        f"or AMX).\n   This CPU is {cpu_capability}-only: bf16 is emulated, so annlib trains in "
        f"{precision} here."
    )

    x0, y0 = next(iter(Batches(*to_tensors(X, y), config.batch_size)))
    fp32 = step_speed(TARGET_MODEL, x0, y0, bf16=False, steps=effort.precision_steps)
    bf16 = step_speed(TARGET_MODEL, x0, y0, bf16=True, steps=effort.precision_steps)
    print(
        f"   {TARGET_MODEL} training step here: fp32 {fp32:,.0f} i/s, "
        f"bf16 autocast {bf16:,.0f} i/s ({bf16 / fp32:.2f}x fp32)"
    )
    rows.append(row("precision", TARGET_MODEL, "fp32_step_images_per_s", fp32, "images/s"))
    rows.append(row("precision", TARGET_MODEL, "bf16_step_images_per_s", bf16, "images/s"))

    step = config.batch_size / (bf16 if precision == "bf16" else fp32)
    for name in OVERHEAD_MODELS:
        rows += report_overhead(name, seconds[name], effort.steps, step)
    return rows


def report_speedup(name: str, seconds: dict[str, list[float]], images: int) -> list[dict]:
    """Print one model's line of annlib against the reference; return its rows."""
    speed = {side: images / statistics.median(s) for side, s in seconds.items()}
    ratio = speed["annlib"] / speed["reference"]
    target = ""
    if name == TARGET_MODEL:
        target = f">= {SPEEDUP_TARGET:g}x: {verdict(ratio >= SPEEDUP_TARGET)}"
    print(
        f"   {name:<10} {speed['reference']:>8,.0f} i/s {speed['annlib']:>8,.0f} i/s "
        f"{ratio:>6.2f}x   {target}"
    )
    spread = max(max(s) / min(s) for s in seconds.values())
    if spread > NOISY_SPREAD:
        print(
            f"   {'':<10} passes of one side differed up to {spread:.1f}x: the machine was busy,"
            " read this line with care (the CSV holds every pass)"
        )
    rows = [
        row(
            "train",
            name,
            f"{side}_images_per_s",
            value,
            "images/s",
            pass_seconds=" ".join(f"{s:.3f}" for s in seconds[side]),
        )
        for side, value in speed.items()
    ]
    goal = f">={SPEEDUP_TARGET:g}" if name == TARGET_MODEL else ""
    return rows + [row("train", name, "annlib_over_reference", ratio, "x", target=goal)]


def report_overhead(
    name: str, seconds: dict[str, list[float]], steps: int, target_step: float
) -> list[dict]:
    """Print the loop's overhead on one model and, from it, an estimate for the target model.

    The loop's cost is per batch (indexing, scaling, the bar, the running metrics), whatever the
    model, so its share is largest on the model with the shortest step, and a longer step's share
    follows from the same cost a batch.
    """
    loop = statistics.median(seconds["annlib_no_augment"])
    bare = statistics.median(seconds["bare_steps"])
    per_batch = (loop - bare) / steps
    share = per_batch / (bare / steps)
    estimate = per_batch / target_step
    print(
        "   Loop overhead: annlib's loop (Batches + train_epoch, Augment 0) against the same\n"
        "   steps over the same batches built beforehand in a list, channels_last in both.\n"
        "   What differs: batching on the fly, the progress bar, the running loss and accuracy."
    )
    target = f"target < {100 * OVERHEAD_TARGET:g} %"
    print(
        f"   {name:<10} {100 * share:+6.1f} % ({1e3 * per_batch:.2f} ms a batch)   "
        f"{target}: {verdict(share < OVERHEAD_TARGET)}\n"
        f"   {TARGET_MODEL:<10} {100 * estimate:+6.1f} % estimated: the same cost a batch over "
        f"its {1e3 * target_step:.0f} ms step   {target}: {verdict(estimate < OVERHEAD_TARGET)}"
    )
    goal = f"<{100 * OVERHEAD_TARGET:g}"
    return [
        row("overhead", name, "loop_overhead", 100 * share, "%", target=goal),
        row("overhead", name, "loop_ms_per_batch", 1e3 * per_batch, "ms"),
        row("overhead", TARGET_MODEL, "loop_overhead_estimated", 100 * estimate, "%", target=goal),
    ]


def report_inference(effort: Effort, threads: int) -> list[dict]:
    """Time inference of every model, print a table and return the rows."""
    print(
        f"\n3. Inference (annlib.timing.latency_and_throughput), fp32, {threads} threads, "
        f"{effort.min_run_time:g} s per measurement"
    )
    print(f"   {'model':<10} {'layout':<14} {'batch 1':>12} {f'batch {effort.large_batch}':>14}")
    timings = benchmark_inference(effort)
    for small, large in zip(timings[::2], timings[1::2], strict=True):
        print(
            f"   {small['model']:<10} {small['memory_format']:<14} "
            f"{small['images_per_s']:>8,.0f} i/s {large['images_per_s']:>10,.0f} i/s"
        )
    rows = []
    for t in timings:
        for metric, unit in (
            ("images_per_s", "images/s"),
            ("ms_per_batch", "ms"),
            ("iqr_ms", "ms"),
        ):
            extra = {k: t[k] for k in ("batch", "memory_format", "threads")}
            rows.append(row("inference", t["model"], metric, t[metric], unit, **extra))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="EMNIST folder (default: annlib's data_dir())"
    )
    parser.add_argument("--quick", action="store_true", help="few steps: checks the wiring only")
    parser.add_argument(
        "--out",
        type=Path,
        default=project_root() / "results" / "benchmark.csv",
        help="CSV of every result (default: results/benchmark.csv)",
    )
    parser.add_argument("--steps", type=int, help="batches of 256 per training pass")
    parser.add_argument("--repeats", type=int, help="timed training passes per side")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the three measurements, print them beside their targets and save the CSV."""
    args = parse_args(argv)
    effort = QUICK if args.quick else FULL
    overrides = {"steps": args.steps, "repeats": args.repeats}
    effort = replace(effort, **{k: v for k, v in overrides.items() if v is not None})
    root = data_dir(args.data_dir)
    env = environment()
    threads = torch.get_num_threads()
    began = time.perf_counter()

    quick = " --quick: checks the wiring, numbers mean little" if args.quick else ""
    print(f"annlib benchmark{quick}")
    print(
        f"CPU {env['cpu']}, {env['cpu_count']} cores, {threads} torch threads, "
        f"{env['cpu_capability']}, bf16_native()={bf16_native()}, torch {env['torch']}"
    )
    rows = report_loading(root)
    rows += report_training(root, effort, env["cpu_capability"])
    rows += report_inference(effort, threads)

    table = pd.DataFrame(rows).assign(quick=args.quick, **env)
    path = save_csv(args.out, table)
    print(f"\n{len(table)} rows written to {path} in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
