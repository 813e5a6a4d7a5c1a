"""Inference latency and throughput, measured the same way for every model."""

from __future__ import annotations

import copy

import pandas as pd
import torch
import torch.utils.benchmark as benchmark
from torch import nn

from annlib.evaluate import autocast
from annlib.models import INPUT_SHAPE
from annlib.records import cpu_name


def hardware() -> str:
    """Return the device measurements run on: the GPU's name, else the CPU's."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()


def measure_inference(
    model: nn.Module,
    batch_size: int,
    name: str = "",
    threads: int | None = None,
    bf16: bool = False,
    channels_last: bool = False,
    min_run_time: float = 1.0,
    warmup: int = 3,
) -> dict:
    """Return one row of timing data: median and spread of a forward pass at one batch size.

    torch.utils.benchmark repeats the call in blocks until min_run_time has passed and reports
    the median and interquartile range per call. On a GPU the statement synchronizes the device
    so that the time covers the kernels, not just their launch.
    """
    threads = threads or torch.get_num_threads()
    device = next(model.parameters()).device
    model = copy.deepcopy(model).eval()
    x = torch.rand(batch_size, *INPUT_SHAPE, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    sync = "torch.cuda.synchronize()" if device.type == "cuda" else "pass"

    def forward():
        with torch.inference_mode(), autocast(bf16):
            return model(x)

    for _ in range(warmup):
        forward()
    timer = benchmark.Timer(
        stmt=f"forward(); {sync}",
        globals={"forward": forward, "torch": torch},
        num_threads=threads,
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {
        "model": name,
        "batch": batch_size,
        "threads": threads,
        "dtype": "bfloat16" if bf16 else "float32",
        "memory_format": "channels_last" if channels_last else "contiguous",
        "ms_per_batch": m.median * 1e3,
        "iqr_ms": m.iqr * 1e3,
        "runs": len(m.times) * m.number_per_run,
        "images_per_s": batch_size / m.median,
        "hardware": hardware(),
        "torch": torch.__version__,
    }


def latency_and_throughput(
    model: nn.Module,
    name: str,
    large_batch: int = 512,
    min_run_time: float = 1.0,
    **kwargs,
) -> list[dict]:
    """Return timing rows at batch size 1 (latency) and at a large batch (throughput)."""
    return [
        measure_inference(model, b, name, min_run_time=min_run_time, **kwargs)
        for b in (1, large_batch)
    ]


def time_models(
    models: dict[str, nn.Module], large_batch: int = 512, min_run_time: float = 1.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time every model at batch 1 and a large batch in both memory layouts.

    Returns all rows, and the faster layout per model and batch size (the one a user would run).
    """
    rows = [
        row
        for name, model in models.items()
        for layout in (False, True)
        for row in latency_and_throughput(
            model, name, large_batch, min_run_time, channels_last=layout
        )
    ]
    every = pd.DataFrame(rows)
    best = every.loc[every.groupby(["model", "batch"], sort=False).images_per_s.idxmax()]
    return every, best.reset_index(drop=True)
