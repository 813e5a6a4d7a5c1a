"""Model definitions for 28x28 one-channel characters, a registry by name, and their costs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

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


REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet50": resnet50,
    "vgg-small": VGGSmall,
}


def create_model(name: str, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
    """Return a freshly initialised model from the registry by name."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(sorted(REGISTRY))}.")
    return REGISTRY[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
    """Return a model's name, parameter count and FLOPs per image as one row."""
    return {"model": name, "parameters": count_parameters(model), "flops": flops_per_image(model)}
