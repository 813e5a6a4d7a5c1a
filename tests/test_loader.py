"""In-memory batches and the affine augmentation."""

from __future__ import annotations

import numpy as np
import torch

from annlib.data import Augment, Batches, prepare, to_tensors


def numbered(n: int, channels: int = 1, side: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Return uint8 images whose every pixel equals the image's index, and labels = index."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, side, side)
    return images.contiguous(), torch.arange(n)


def epoch(batches: Batches) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Return the images and labels of one pass, batch by batch."""
    xs, ys = [], []
    for x, y in batches:
        xs.append(x)
        ys.append(y)
    return xs, ys


def test_every_sample_once_per_epoch_without_drop_last():
    images, labels = numbered(100)
    batches = Batches(images, labels, 32, shuffle=True, seed=0)

    for _ in range(2):
        xs, ys = epoch(batches)
        seen = torch.cat(ys)
        assert len(batches) == 4
        assert [len(y) for y in ys] == [32, 32, 32, 4]
        assert sorted(seen.tolist()) == list(range(100))
        for x, y in zip(xs, ys, strict=True):
            torch.testing.assert_close(x[:, 0, 0, 0], y.float() / 255, rtol=0, atol=1e-7)


def test_shuffling_is_seeded_and_changes_each_epoch():
    images, labels = numbered(100)

    first = torch.cat(epoch(Batches(images, labels, 16, shuffle=True, seed=7))[1])
    again = torch.cat(epoch(Batches(images, labels, 16, shuffle=True, seed=7))[1])
    other = torch.cat(epoch(Batches(images, labels, 16, shuffle=True, seed=8))[1])
    batches = Batches(images, labels, 16, shuffle=True, seed=7)
    epoch(batches)
    second = torch.cat(epoch(batches)[1])

    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, second)
    assert not torch.equal(first, labels)


def test_unshuffled_order_and_drop_last():
    images, labels = numbered(100)

    ys = epoch(Batches(images, labels, 32))[1]
    dropped = Batches(images, labels, 32, shuffle=True, drop_last=True)
    ys_dropped = epoch(dropped)[1]

    assert torch.equal(torch.cat(ys), labels)
    assert len(dropped) == 3
    assert [len(y) for y in ys_dropped] == [32, 32, 32]
    assert len(set(torch.cat(ys_dropped).tolist())) == 96


def test_prepare_scales_to_unit_range():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(3, 1, 1, 1)

    x = prepare(images)

    assert x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    assert images.dtype == torch.uint8


def test_to_tensors_adds_a_channel_and_shares_memory():
    X = np.zeros((4, 28, 28), np.uint8)
    y = np.arange(4)

    images, labels = to_tensors(X, y)
    X[1, 2, 3] = 9

    assert images.shape == (4, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert images[1, 0, 2, 3] == 9


def test_channels_last_batches():
    images, labels = numbered(10, channels=3, side=8)

    x, _ = next(iter(Batches(images, labels, 4, channels_last=True)))
    plain, _ = next(iter(Batches(images, labels, 4)))

    assert x.is_contiguous(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    assert plain.is_contiguous()
    assert torch.equal(x, plain)


def test_channels_last_with_augmentation():
    images, labels = numbered(10, channels=3, side=8)

    x, _ = next(iter(Batches(images, labels, 4, augment=Augment(1.0), channels_last=True)))

    assert x.is_contiguous(memory_format=torch.channels_last)


def test_augment_strength_zero_is_identity():
    x = torch.rand(8, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()

    out = Augment(strength=0)(x, gen)

    assert torch.equal(out, x)
    assert torch.equal(gen.get_state(), state)


def test_augment_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(16, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0

    out = Augment(strength=1.0)(x, torch.Generator().manual_seed(0))
    same = Augment(strength=1.0)(x, torch.Generator().manual_seed(0))
    other = Augment(strength=1.0)(x, torch.Generator().manual_seed(1))

    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, same)
    assert not torch.equal(out, other)
    assert not torch.allclose(out, x, atol=1e-3)


def test_augment_is_a_small_warp():
    """A centred blob stays roughly in place: at most a couple of pixels of shift, no flip."""
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 6:12, 12:16] = 1.0  # a bar in the upper half

    out = Augment(strength=1.0)(x, torch.Generator().manual_seed(0))
    rows = torch.arange(28.0).view(1, 1, 28, 1)
    centre = (out * rows).sum((1, 2, 3)) / out.sum((1, 2, 3))

    assert torch.all((centre - 8.5).abs() < 3.5)
