"""ImageNet-pretrained MobileNetV2 adapted to 28x28 one-channel characters, from a local file.

The weights come from a file given by path (no network here). The one this project was built with
is a float state_dict dequantized from torchvision's QNNPACK-quantized MobileNetV2: its batch norms
are folded into the convolutions (each is an identity plus a bias) and it was trained with ReLU,
not ReLU6. See ../shared/weights/SOURCES.md beside the EMNIST files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from annlib.paths import project_root

ENV_VAR = "ANNLIB_WEIGHTS"
MOBILENET_V2_FILE = "mobilenet_v2-dequant_tvqnnpack-7c15fd75.pth"
KNOWN_SHA256 = {
    MOBILENET_V2_FILE: "7c15fd7547e751647378fe05f2d9a9dbf16aa3a3679e97def97c678aead3f20e",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 48
MODES = ("finetune", "head", "scratch")


class WeightsError(RuntimeError):
    """Pretrained weights were asked for but cannot be found, read or loaded."""


def weights_file(path: str | os.PathLike | None = None, name: str = MOBILENET_V2_FILE) -> Path:
    """Return the weights file: path (a file, or a folder holding name), else $ANNLIB_WEIGHTS,
    else the project's weights/ folder; raise WeightsError if it is not there."""
    where = path if path is not None else os.environ.get(ENV_VAR) or project_root() / "weights"
    candidate = Path(where).expanduser()
    if candidate.is_dir():
        candidate = candidate / name
    if not candidate.is_file():
        raise WeightsError(
            f"Pretrained weights not found at {candidate}. Pass the file (or its folder) as "
            f"weights=..., set {ENV_VAR}, or put {name} in weights/; here it is in "
            "../shared/weights/. With network access, torchvision.models.mobilenet_v2("
            'weights="DEFAULT") gives the original float weights.'
        )
    return candidate


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Return the state_dict in a weights file, checking its sha256 where the file is known."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = KNOWN_SHA256.get(path.name)
    if expected is not None and digest != expected:
        raise WeightsError(
            f"{path} does not match the sha256 of {path.name} ({expected[:12]}...): the file is "
            "corrupt or another file carries its name. Copy it again from its source."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise WeightsError(f"{path} is not a readable PyTorch weights file: {error}") from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict.")
    return state


class GrayToImageNet(nn.Module):
    """Resize a batch of 28x28 gray images to size x size, copy to RGB, normalize as ImageNet.

    MobileNetV2 divides the image by 32: at 28x28 its last feature map would be 1x1, at 48x48
    it is 2x2. On this CPU 48x48 trains as fast as 32x32 (both run below the cores' peak) and
    1.7 times faster than 64x64. The mean and std are the ones its pretraining used.
    """

    def __init__(self, size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std


class MobileNetV2Emnist(nn.Module):
    """torchvision's MobileNetV2 behind a gray-to-RGB input adapter, with a 47-way head.

    mode "head" trains the classifier alone: the backbone's weights are frozen and it stays in
    evaluation mode, so its batch norms do not move. "finetune" trains everything from the
    pretrained weights and "scratch" trains the same architecture from random weights.

    Folded batch norms (identity plus bias) would, in training mode, normalize by batch statistics
    that the pretrained network never applied. So in "finetune" mode the first training batch
    calibrates them: each folded layer gets that batch's mean and variance as running statistics
    and a scale and shift that undo them, which leaves the network's function unchanged while
    making its batch norms ordinary ones again.
    """

    def __init__(self, backbone: nn.Module, mode: str, size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.mode = mode
        self.adapt = GrayToImageNet(size)
        self.features = backbone.features
        self.classifier = backbone.classifier
        self.register_buffer("calibrated", torch.tensor(mode != "finetune"))
        if mode == "head":
            self.features.requires_grad_(False)

    def train(self, mode: bool = True) -> MobileNetV2Emnist:
        super().train(mode)
        if self.mode == "head":
            self.features.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.calibrated:
            calibrate_folded_batch_norms(self.features, self.adapt(x))
            self.calibrated.fill_(True)
        x = self.features(self.adapt(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def is_folded(bn: nn.BatchNorm2d) -> bool:
    """Return True if a batch norm is an identity plus bias (statistics folded away)."""
    return bool(
        torch.all(bn.weight == 1)
        and torch.all(bn.running_mean == 0)
        and torch.allclose(bn.running_var + bn.eps, torch.ones_like(bn.running_var))
    )


@torch.no_grad()
def calibrate_folded_batch_norms(features: nn.Module, x: torch.Tensor) -> int:
    """Give every folded batch norm the statistics of its input on batch x; return how many.

    With mean m and variance v of a layer's input, running statistics (m, v), scale sqrt(v + eps)
    and shift bias + m compute the same x + bias as before, in evaluation mode and, on this
    batch, in training mode too. One pass suffices: no layer's output changes on the way.
    """
    folded = [m for m in features.modules() if isinstance(m, nn.BatchNorm2d) and is_folded(m)]
    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(module, inputs, output):
        t = inputs[0].float()
        stats[module] = (t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False))

    hooks = [m.register_forward_hook(record) for m in folded]
    was_training = features.training
    features.eval()
    try:
        features(x)
    finally:
        for hook in hooks:
            hook.remove()
        features.train(was_training)

    for bn in folded:
        mean, var = stats[bn]
        scale = (var + bn.eps).sqrt()
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(scale)
        bn.bias.add_(mean)
    return len(folded)


def mobilenet_v2(
    num_classes: int,
    mode: str = "finetune",
    weights: str | os.PathLike | None = None,
    size: int = INPUT_SIZE,
) -> MobileNetV2Emnist:
    """Return MobileNetV2 for EMNIST: pretrained from the weights file unless mode is "scratch".

    ReLU6 is replaced by ReLU everywhere, which is what the quantized original was trained with;
    the scratch model gets the same change so that the two differ in their weights alone.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
    backbone = torchvision.models.mobilenet_v2(weights=None)
    for module in backbone.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(module, name, nn.ReLU(inplace=True))
    if mode != "scratch":
        path = weights_file(weights)
        try:
            backbone.load_state_dict(read_state_dict(path), strict=True)
        except RuntimeError as error:
            raise WeightsError(
                f"{path} does not fit torchvision's mobilenet_v2 (strict load failed): {error}"
            ) from error
    backbone.classifier[-1] = nn.Linear(backbone.last_channel, num_classes)
    return MobileNetV2Emnist(backbone, mode, size)


def architecture(model: str) -> str:
    """Return the registry name that builds a model's architecture without pretrained weights.

    A trained MobileNetV2 in any mode has the scratch model's architecture; rebuilding it that
    way lets its trained weights be loaded without the ImageNet weights file.
    """
    return "mobilenetv2-scratch" if model.startswith("mobilenetv2-") else model
