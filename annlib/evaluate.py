"""Predictions and validation metrics of a model on in-memory images."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
    images, labels = to_tensors(X, np.zeros(len(X), dtype=np.int64))
    batches = Batches(images, labels, batch_size, channels_last=channels_last)
    outputs = []
    with autocast(bf16):
        for x, _ in batches:
            outputs.append(model(x).float())
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
