"""In-memory batching of uint8 image tensors, with per-batch affine augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def to_tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Return uint8 images (N, 1, 28, 28) and int64 labels as tensors sharing numpy's memory."""
    return torch.from_numpy(np.ascontiguousarray(X)).unsqueeze(1), torch.from_numpy(y)


def prepare(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Return uint8 images as float32 in [0, 1], the only preprocessing the models expect."""
    x = images.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass(frozen=True)
class Augment:
    """Strength of the random affine transform applied per image: 0 turns it off.

    At strength 1: rotation up to 10 degrees, scale 0.9..1.1, shear up to 0.1, shift up to 2
    pixels. No flips: characters are not mirror-symmetric (b/d, p/q, 2/S would swap).
    """

    strength: float = 1.0
    degrees: float = 10.0
    scale: float = 0.1
    shear: float = 0.1
    shift: float = 2.0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Return a batch (N, 1, H, W) of float images warped by one random affine each."""
        if self.strength <= 0:
            return x
        n, _, h, _ = x.shape
        s = self.strength
        u = torch.rand(n, 5, generator=gen) * 2 - 1
        angle = u[:, 0] * math.radians(self.degrees) * s
        scale = 1 + u[:, 1] * self.scale * s
        shear = u[:, 2] * self.shear * s
        shift = u[:, 3:] * (2 * self.shift / h) * s

        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin + shear * cos, shift[:, 0]], 1),
                torch.stack([sin, cos + shear * sin, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class Batches:
    """Iterate over (x, y) batches of in-memory tensors without any per-sample Python work.

    Each epoch draws a fresh permutation from its own generator, so shuffling and augmentation
    are reproducible from the seed and resumable from the generator's state.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        augment: Augment | None = None,
        channels_last: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.augment = shuffle, augment
        self.channels_last, self.drop_last = channels_last, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min((i + 1) * self.batch_size, n))
            idx = order[sl] if order is not None else sl
            x = prepare(self.images[idx])
            if self.augment is not None:
                x = self.augment(x, self.generator)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
