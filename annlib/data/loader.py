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
        return self.warp(x, self.draw(len(x), gen))

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        """Return the random numbers (n, 5) of n warps, or None when augmentation is off."""
        if self.strength <= 0:
            return None
        return torch.rand(n, 5, generator=gen)

    def warp(self, x: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        """Return the images warped by the affine transforms that draws (one row each) define."""
        if draws is None:
            return x
        _, _, h, _ = x.shape
        s = self.strength
        u = draws * 2 - 1
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

    shard=(rank, world) yields rank's contiguous 1/world part of every batch of batch_size (the
    global batch). Every rank draws the same permutation and the augmentation of the whole global
    batch, then keeps its rows, so the ranks together see exactly the images, warped exactly
    the same way, as one process would, and their generators stay in step.
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
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        world = shard[1]
        if world > 1 and (batch_size % world or not drop_last):
            raise ValueError(
                f"Sharding over {world} processes needs drop_last and a batch size that is a "
                f"multiple of {world}, not {batch_size}."
            )
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.shuffle, self.augment = shuffle, augment
        self.channels_last, self.drop_last = channels_last, drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world = shard

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        part = self.batch_size // self.world
        mine = slice(self.rank * part, (self.rank + 1) * part)
        for i in range(len(self)):
            start, stop = i * self.batch_size, min((i + 1) * self.batch_size, n)
            sl = slice(start + mine.start, min(start + mine.stop, n))
            idx = order[sl] if order is not None else sl
            x = prepare(self.images[idx])
            if self.augment is not None:
                draws = self.augment.draw(stop - start, self.generator)
                x = self.augment.warp(x, draws[mine] if draws is not None else None)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
