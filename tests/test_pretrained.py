"""Pretrained MobileNetV2: finding and checking the weights file, the three modes, calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from annlib.models import count_parameters, create_model
from annlib.pretrained import (
    MOBILENET_V2_FILE,
    WeightsError,
    calibrate_folded_batch_norms,
    is_folded,
    mobilenet_v2,
    weights_file,
)


def test_missing_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(WeightsError, match="ANNLIB_WEIGHTS"):
        create_model("mobilenetv2-finetune", weights=tmp_path)


def test_weights_come_from_the_environment_when_no_path_is_given(tmp_path, monkeypatch):
    (tmp_path / MOBILENET_V2_FILE).write_bytes(b"x")
    monkeypatch.setenv("ANNLIB_WEIGHTS", str(tmp_path))

    assert weights_file() == tmp_path / MOBILENET_V2_FILE


def test_a_corrupt_known_file_is_refused_by_its_checksum(tmp_path):
    (tmp_path / MOBILENET_V2_FILE).write_bytes(b"not the weights")

    with pytest.raises(WeightsError, match="sha256"):
        mobilenet_v2(47, "finetune", tmp_path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    path.write_text("hello")

    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        mobilenet_v2(47, "finetune", path)


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "lenet.pth"
    torch.save(create_model("lenet5").state_dict(), path)

    with pytest.raises(WeightsError, match="does not fit"):
        mobilenet_v2(47, "head", path)


def test_scratch_needs_no_weights_and_uses_relu_only():
    model = mobilenet_v2(47, "scratch", weights="/nonexistent")

    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 47)


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ValueError, match="finetune, head, scratch"):
        mobilenet_v2(47, "partial")


@pytest.fixture(scope="module")
def weights(weights_dir):
    return weights_dir / MOBILENET_V2_FILE


def test_head_mode_trains_the_last_layer_only_and_keeps_the_backbone_in_eval(weights):
    model = create_model("mobilenetv2-head", weights=weights).train()

    assert count_parameters(model, trainable_only=True) == 1280 * 47 + 47
    assert not model.features.training
    assert model.classifier.training


def test_calibration_keeps_the_pretrained_function(weights):
    model = create_model("mobilenetv2-finetune", weights=weights)
    model.classifier[0].p = 0.0  # dropout off, so train and eval mode can be compared
    torch.manual_seed(0)
    x = torch.rand(32, 1, 28, 28)
    folded = [m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(is_folded(bn) for bn in folded)

    with torch.no_grad():
        reference = model.eval()(x)
        trained_mode = model.train()(x)  # the first training forward calibrates

    assert bool(model.calibrated)
    assert not any(is_folded(bn) for bn in folded)
    assert torch.allclose(trained_mode, reference, atol=1e-3)


def test_calibration_leaves_ordinary_batch_norms_alone():
    features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    features[1].running_mean.fill_(0.5)

    assert calibrate_folded_batch_norms(features, torch.rand(4, 1, 8, 8)) == 0
    assert torch.all(features[1].running_mean == 0.5)
