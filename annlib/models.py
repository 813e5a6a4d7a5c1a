"""Model definitions for 28x28 one-channel characters, a registry by name, and their costs."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from annlib.pretrained import mobilenet_v2

NUM_CLASSES = 47
INPUT_SHAPE = (1, 28, 28)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) adapted to 28x28 input and a softmax output.

    Adaptations, all standard in modern re-implementations:
    - the 28x28 image is zero-padded by 2 in C1, which is what the paper did to MNIST's 28x28
      digits to reach its 32x32 input, so every feature map keeps the paper's size;
    - S2 and S4 are plain 2x2 average pooling (the paper's had a trainable gain and bias);
    - C3 connects to all six S2 maps (the paper used a sparse table of 60 connections);
    - tanh activations (the paper scaled them, 1.7159 tanh(2x/3));
    - the output is a linear layer of 47 logits trained with cross-entropy, in place of the
      paper's 10 Euclidean RBF units.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),  # C1: 6 @ 28x28
            nn.Tanh(),
            nn.AvgPool2d(2),  # S2: 6 @ 14x14
            nn.Conv2d(6, 16, 5),  # C3: 16 @ 10x10
            nn.Tanh(),
            nn.AvgPool2d(2),  # S4: 16 @ 5x5
            nn.Conv2d(16, 120, 5),  # C5: 120 @ 1x1
            nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(120, 84),  # F6
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet50(num_classes: int = NUM_CLASSES) -> nn.Module:
    """Return torchvision's ResNet-50 with a one-channel stem and a 47-way head.

    Only two layers change: conv1 takes one channel instead of three (same 7x7, stride 2), and fc
    has 47 outputs. The rest, stem max-pool included, is torchvision's, so a 28x28 image shrinks
    to 7x7 after the stem and to 1x1 in the last stage: cheap (about 0.16 GFLOPs per image against
    8.2 at 3x224x224), at the price of very coarse late feature maps.
    """
    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    """Return a 3x3 convolution, batch norm and ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class VGGSmall(nn.Module):
    """A compact VGG-style network: two blocks of two 3x3 conv-BN-ReLU layers, then a linear head.

    At width 32 it costs about 37 MFLOPs per image (the mid-size CNN of the benchmark).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_bn(1, w),
            *conv_bn(w, w),
            nn.MaxPool2d(2),
            *conv_bn(w, 2 * w),
            *conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(2 * w * 7 * 7, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A small residual network for 28x28: a 3x3 stem, three stages at 28, 14 and 7 pixels.

    Each stage holds `blocks` basic blocks; widths are w, 2w and 4w; global average pooling feeds
    the linear head. Unlike ResNet-50 it never shrinks the image below 7x7.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 16, blocks: int = 1):
        super().__init__()
        w = width
        layers: list[nn.Module] = [*conv_bn(1, w)]
        for stage, (c_in, c_out) in enumerate([(w, w), (w, 2 * w), (2 * w, 4 * w)]):
            stride = 1 if stage == 0 else 2
            layers.append(BasicBlock(c_in, c_out, stride))
            layers += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def separable(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """Return a depthwise 3x3 and a pointwise 1x1 convolution, each with batch norm and ReLU."""
    return [
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class SeparableNet(nn.Module):
    """A MobileNet-v1-style network: a 3x3 stem, then depthwise-separable blocks.

    Widths w, 2w, 4w, 8w at 28, 14, 7 and 7 pixels (two blocks at 14 and at 7), global average
    pooling and a linear head. Depthwise layers cost few FLOPs but run below the CPU's peak, so this
    family shows how far FLOPs are from latency.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 16, dropout: float = 0.2):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_bn(1, w),
            *separable(w, 2 * w, stride=2),
            *separable(2 * w, 2 * w),
            *separable(2 * w, 4 * w, stride=2),
            *separable(4 * w, 4 * w),
            *separable(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet50": resnet50,
    "vgg-small": VGGSmall,
    "vgg-8": partial(VGGSmall, width=8),
    "vgg-16": partial(VGGSmall, width=16),
    "vgg-32": partial(VGGSmall, width=32),
    "resnet-small-8": partial(ResNetSmall, width=8),
    "resnet-small-16": partial(ResNetSmall, width=16),
    "resnet-small-32": partial(ResNetSmall, width=32),
    "sepnet-8": partial(SeparableNet, width=8),
    "sepnet-16": partial(SeparableNet, width=16),
    "sepnet-32": partial(SeparableNet, width=32),
    "sepnet-64": partial(SeparableNet, width=64),
    "mobilenetv2-finetune": partial(mobilenet_v2, mode="finetune"),
    "mobilenetv2-head": partial(mobilenet_v2, mode="head"),
    "mobilenetv2-scratch": partial(mobilenet_v2, mode="scratch"),
}


def create_model(name: str, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
    """Return a freshly initialised model from the registry by name."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters (only those that train, if trainable_only)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def size_on_disk(model: nn.Module) -> int:
    """Return the bytes its state_dict takes when saved with torch.save."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def flops_per_image(model: nn.Module, input_shape: tuple[int, ...] = INPUT_SHAPE) -> int:
    """Return the FLOPs of one forward pass on one image, counted by torch's FlopCounterMode.

    torch counts a multiply-add as two FLOPs and counts convolutions and matrix products only
    (activations, pooling and normalisation are left out, as is usual).
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def model_summary(name: str, model: nn.Module) -> dict[str, int | str]:
    """Return a model's name, parameter counts (all, trainable) and FLOPs per image as one row."""
    return {
        "model": name,
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "flops": flops_per_image(model),
    }
