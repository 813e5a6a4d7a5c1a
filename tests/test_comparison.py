"""Loading the models notebook 05 compares, and carrying a saved score forward."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from annlib.comparison import comparison_model, earlier_score
from annlib.export import WEIGHTS, save_model
from annlib.models import create_model
from annlib.paths import checkpoints_dir
from annlib.train import BEST

CHARACTERS = [str(i) for i in range(10)] + [chr(c) for c in range(65, 65 + 37)]


@pytest.fixture
def net():
    torch.manual_seed(0)
    return create_model("lenet5", num_classes=len(CHARACTERS)).eval()


def history(run="lenet5"):
    return {"profile": "smoke", "study": "bymerge-small", "run": run, "model": "lenet5",
            "best_val_accuracy": 0.75}  # fmt: skip


def same_outputs(a, b):
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_nothing_here_gives_no_model(tmp_path):
    net, source = comparison_model(history(), tmp_path / "lenet5-retest", 47, tmp_path)
    assert net is None and source == {"weights": "not in this checkout"}


def test_the_runs_own_checkpoint_comes_first(net, tmp_path):
    path = checkpoints_dir("smoke", tmp_path) / "bymerge-small" / "lenet5" / BEST
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    loaded, source = comparison_model(history(), tmp_path / "lenet5-retest", 47, tmp_path)
    assert source == {"weights": "run's checkpoint", "weights_val_accuracy": 0.75}
    assert same_outputs(loaded, net)


def test_a_retrained_copy_then_its_card_alone(net, tmp_path):
    folder = tmp_path / "lenet5-retest"
    save_model(net, "lenet5", CHARACTERS, folder, validation_accuracy=0.7, run="lenet5-retest")
    loaded, source = comparison_model(history(), folder, 47, tmp_path)
    assert source == {"weights": "retrained (lenet5-retest)", "weights_val_accuracy": 0.7}
    assert same_outputs(loaded, net)

    (folder / WEIGHTS).unlink()
    loaded, source = comparison_model(history(), folder, 47, tmp_path)
    assert loaded is None and source["weights_val_accuracy"] == 0.7


TABLE = pd.DataFrame({
    "model": ["resnet50", "resnet50", "lenet5"],
    "weights": ["retrained (resnet50-retest)", "not in this checkout", "run's checkpoint"],
    "weights_val_accuracy": [0.8652979731559753, np.nan, 0.88],
    "test_n": [1000.0, np.nan, 1000.0],
    "test_accuracy": [0.87, np.nan, 0.88],
    "test_low": [0.85, np.nan, 0.86],
    "test_high": [0.89, np.nan, 0.90],
    "onnx_latency_ms": [2.5, np.nan, 0.05],
    "onnx_images_per_s": [1000.0, np.nan, 50000.0],
})  # fmt: skip
RESNET = {"model": "resnet50", "weights": "retrained (resnet50-retest)",
          "weights_val_accuracy": 0.8652979731559753, "test_n": 1000}  # fmt: skip


def test_earlier_score_carries_the_score_and_its_timing(tmp_path):
    TABLE.to_csv(tmp_path / "saved.csv", index=False)  # through a file, as the notebook reads it
    kept = earlier_score(pd.read_csv(tmp_path / "saved.csv"), RESNET)
    assert kept == {"test_n": 1000, "test_accuracy": 0.87, "test_low": 0.85, "test_high": 0.89,
                    "onnx_latency_ms": 2.5, "onnx_images_per_s": 1000.0}  # fmt: skip
    assert isinstance(kept["test_n"], int)


@pytest.mark.parametrize(
    "change",
    [{"test_n": 999}, {"weights_val_accuracy": 0.86}, {"model": "vgg-32"},
     {"weights": "not in this checkout"}],
)  # fmt: skip
def test_earlier_score_needs_the_same_weights_and_test_size(change):
    assert earlier_score(TABLE, RESNET | change) is None


def test_earlier_score_of_an_older_or_missing_table_is_none():
    assert earlier_score(None, RESNET) is None
    assert earlier_score(TABLE.drop(columns="weights_val_accuracy"), RESNET) is None
    assert earlier_score(TABLE.drop(columns=["onnx_latency_ms", "onnx_images_per_s"]), RESNET) == {
        "test_n": 1000, "test_accuracy": 0.87, "test_low": 0.85, "test_high": 0.89}  # fmt: skip
    with pytest.raises(ValueError, match="test_n"):
        earlier_score(TABLE, {k: v for k, v in RESNET.items() if k != "test_n"})
