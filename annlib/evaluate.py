"""Predictions and validation metrics of a model on in-memory images."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from annlib import distributed
from annlib.data.loader import Batches, to_tensors


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    """Return a bfloat16 autocast context on the CPU when bf16 is True, else a no-op."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    X: np.ndarray,
    batch_size: int = 1024,
    bf16: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Return float32 logits (N, classes) of a model on upright uint8 images (N, 28, 28)."""
    model.eval()
    device = next(model.parameters()).device
    images, labels = to_tensors(X, np.zeros(len(X), dtype=np.int64))
    batches = Batches(images, labels, batch_size, channels_last=channels_last)
    outputs = []
    with autocast(bf16):
        for x, _ in batches:
            outputs.append(model(x.to(device)).float().cpu())
    return torch.cat(outputs)


def evaluate(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int = 1024,
    bf16: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Return mean cross-entropy loss and accuracy of a model on labelled images."""
    logits = predict_logits(model, X, batch_size, bf16, channels_last)
    target = torch.from_numpy(np.asarray(y))
    loss = F.cross_entropy(logits, target).item()
    accuracy = (logits.argmax(1) == target).float().mean().item()
    return {"loss": loss, "accuracy": accuracy}


def evaluate_shared(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int = 1024,
    bf16: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Return evaluate's metrics; under several processes each scores a share and sums are pooled.

    Every rank gets the same numbers, so decisions taken on them (best epoch, early stopping) agree.
    """
    if distributed.world_size() == 1:
        return evaluate(model, X, y, batch_size, bf16, channels_last)
    part = distributed.shard(len(y))
    n = len(y[part])
    metrics = evaluate(model, X[part], y[part], batch_size, bf16, channels_last) if n else {}
    loss, correct, total = distributed.all_reduce(
        [metrics.get("loss", 0.0) * n, round(metrics.get("accuracy", 0.0) * n), n]
    )
    return {"loss": loss / total, "accuracy": correct / total}
