"""Saving results as data: atomic JSON/CSV writes and a record of the hardware and versions."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside path; rename it over path on success, delete it on failure.

    The temporary name keeps path's suffix, so writers that choose a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write text to path through a temporary file in the same folder, then rename it."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_json(path: str | Path, obj: Any) -> Path:
    """Save obj as indented JSON, atomically."""
    return write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def load_json(path: str | Path) -> Any:
    """Load a JSON file."""
    return json.loads(Path(path).read_text())


def save_csv(path: str | Path, table: pd.DataFrame) -> Path:
    """Save a DataFrame as CSV, atomically."""
    return write_atomic(path, table.to_csv(index=False))


def cpu_name() -> str:
    """Return the processor's model name as the OS reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Return the hardware and software versions a measurement was made with."""
    import numpy
    import torch
    import torchvision

    env = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_native": bf16_native(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "onnxruntime": installed_version("onnxruntime"),
    }
    return env


def installed_version(package: str) -> str | None:
    """Return an installed package's version without importing it, None if it is absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def bf16_native() -> bool:
    """Return True if oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
