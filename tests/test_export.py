"""Saving a model folder and predicting from it: round trip, orientation, card and errors."""

from __future__ import annotations

import json
import shutil
import string

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from annlib.evaluate import predict_logits
from annlib.export import (
    CARD,
    ONNX_FP32,
    ONNX_INT8,
    WEIGHTS,
    ModelFolderError,
    default_folder,
    load_model,
    save_model,
)
from annlib.inference import export_onnx, quantize_int8
from annlib.models import create_model
from annlib.paths import project_root
from annlib.records import load_json

CHARACTERS = list(string.digits + string.ascii_uppercase + "abdefghnqrt")
OPTIONS = {"width": 8, "dropout": 0.1}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """64 random upright uint8 images."""
    return np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """An untrained vgg-small (width 8) whose batch norms hold non-trivial running statistics."""
    torch.manual_seed(0)
    model = create_model("vgg-small", **OPTIONS)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def folder(model, images, tmp_path_factory):
    """The model saved with an int8 ONNX model and a small performance table."""
    int8 = quantize_int8(export_onnx(model), images)
    performance = pd.DataFrame(
        [
            {"form": "eager-fp32", "batch": 1, "ms_per_batch": 0.5, "error": None},
            {"form": "torch.compile", "batch": 1, "ms_per_batch": float("nan"), "error": "x"},
        ]
    )
    return save_model(
        model,
        "vgg-small",
        CHARACTERS,
        tmp_path_factory.mktemp("models") / "tiny",
        options=OPTIONS,
        validation_accuracy=0.5,
        performance=performance,
        deployment={"form": "eager-fp32"},
        onnx_int8=int8,
    )


def test_folder_holds_every_file_and_no_temporaries(folder):
    names = sorted(p.name for p in folder.iterdir())

    assert names == sorted([CARD, WEIGHTS, ONNX_FP32, ONNX_INT8])


def test_model_card(folder):
    text = (folder / CARD).read_text()
    card = json.loads(text)

    assert card["name"] == "tiny" and card["model"] == "vgg-small"
    assert card["options"] == OPTIONS
    assert card["characters"] == CHARACTERS and card["num_classes"] == 47
    assert card["input"]["dtype"] == "uint8" and card["input"]["shape"] == [28, 28]
    assert "transposed" in card["input"]["orientation"]
    assert "255" in card["input"]["scaling"] and "None" in card["input"]["normalization"]
    assert card["files"] == {"weights": WEIGHTS, "onnx": ONNX_FP32, "onnx_int8": ONNX_INT8}
    assert card["validation_accuracy"] == 0.5 and card["deployment"] == {"form": "eager-fp32"}
    assert card["performance"]["hardware"]
    assert card["performance"]["rows"][1]["ms_per_batch"] is None  # NaN stored as null
    assert "NaN" not in text
    assert {"torch", "onnx", "onnxruntime", "python", "cpu"} <= card["environment"].keys()
    assert card["weights_dtype"] == "float32"


def test_half_weights_take_half_the_space_and_load_as_float32(folder, model, images, tmp_path):
    half = save_model(
        model,
        "vgg-small",
        CHARACTERS,
        tmp_path / "half",
        options=OPTIONS,
        weights_dtype=torch.float16,
    )
    assert load_json(half / CARD)["weights_dtype"] == "float16"
    stored = torch.load(half / WEIGHTS, weights_only=True)
    assert all(v.dtype != torch.float32 for v in stored.values())
    assert (half / WEIGHTS).stat().st_size < 0.6 * (folder / WEIGHTS).stat().st_size

    full, rounded = (load_model(f).logits(images, "upright") for f in (folder, half))
    assert rounded.dtype == torch.float32
    assert torch.allclose(full, rounded, atol=1e-2 * float(full.abs().max()))


def test_round_trip_matches_the_original_model(folder, model, images):
    expected = torch.softmax(predict_logits(model, images), 1)

    prediction = load_model(folder).predict(images, orientation="upright")

    assert np.array_equal(prediction.classes, expected.argmax(1).numpy())
    assert np.allclose(prediction.probabilities, expected.max(1).values.numpy(), atol=1e-6)


def test_onnx_backend_matches_the_torch_backend(folder, images):
    torch_prediction = load_model(folder).predict(images)

    onnx_prediction = load_model(folder, backend="onnx").predict(images)

    assert np.array_equal(onnx_prediction.classes, torch_prediction.classes)
    assert np.allclose(
        onnx_prediction.top_probabilities, torch_prediction.top_probabilities, atol=1e-5
    )


def test_int8_backend_predicts_valid_probabilities(folder, images):
    prediction = load_model(folder, backend="onnx-int8").predict(images, top_k=3)

    assert prediction.classes.shape == (64,) and prediction.top_classes.shape == (64, 3)
    assert ((prediction.classes >= 0) & (prediction.classes < 47)).all()
    assert ((prediction.probabilities > 0) & (prediction.probabilities <= 1)).all()


def test_official_orientation_is_the_transpose_of_upright(folder, images):
    predictor = load_model(folder)

    upright = predictor.logits(images, orientation="upright")
    official = predictor.logits(images.transpose(0, 2, 1), orientation="official")
    default = predictor.logits(np.ascontiguousarray(images.transpose(0, 2, 1)))

    assert torch.equal(official, upright) and torch.equal(default, upright)
    assert not torch.equal(predictor.logits(images, orientation="official"), upright)


def test_prediction_maps_classes_to_characters(folder, images):
    prediction = load_model(folder).predict(images, top_k=5)

    assert prediction.characters == [CHARACTERS[c] for c in prediction.classes]
    assert prediction.top_characters == [
        [CHARACTERS[c] for c in row] for row in prediction.top_classes
    ]
    assert np.array_equal(prediction.top_classes[:, 0], prediction.classes)
    assert np.array_equal(prediction.top_probabilities[:, 0], prediction.probabilities)
    assert (np.diff(prediction.top_probabilities, axis=1) <= 0).all()


def test_single_image_and_large_top_k(folder, images):
    predictor = load_model(folder)

    one = predictor.predict(images[5], orientation="upright", top_k=100)
    batch = predictor.predict(images, orientation="upright")

    assert one.classes.shape == (1,) and one.top_classes.shape == (1, 47)
    assert one.classes[0] == batch.classes[5]
    assert one.top_probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_bad_inputs_are_refused_with_a_reason(folder, images):
    predictor = load_model(folder)

    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(images.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        predictor.predict(images[:, :, :27])
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        predictor.predict(images[:, None])
    with pytest.raises(ValueError, match="orientation"):
        predictor.predict(images, orientation="transposed")
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict(images, top_k=0)
    with pytest.raises(ValueError, match="backend"):
        load_model(folder, backend="tensorrt")


def test_missing_folder_or_files_say_how_to_create_them(folder, tmp_path):
    with pytest.raises(ModelFolderError, match="save_model"):
        load_model(tmp_path / "absent")
    with pytest.raises(ModelFolderError, match="model card"):
        load_model(tmp_path)

    copy = shutil.copytree(folder, tmp_path / "copy")
    (copy / WEIGHTS).unlink()
    with pytest.raises(ModelFolderError, match="weights"):
        load_model(copy)
    blank = np.zeros((28, 28), np.uint8)
    assert load_model(copy, backend="onnx").predict(blank).classes.shape == (1,)


def test_int8_backend_needs_an_int8_file(model, tmp_path):
    saved = save_model(model, "vgg-small", CHARACTERS, tmp_path / "fp32", options=OPTIONS)

    assert json.loads((saved / CARD).read_text())["files"]["onnx_int8"] is None
    with pytest.raises(ModelFolderError, match="onnx-int8"):
        load_model(saved, backend="onnx-int8")


def test_wrong_options_fail_at_save_time(model, tmp_path):
    with pytest.raises(RuntimeError, match="size mismatch"):
        save_model(model, "vgg-small", CHARACTERS, tmp_path / "wrong", options={"width": 16})

    assert not (tmp_path / "wrong").exists()


def test_default_folder_is_models_name():
    assert default_folder("best") == project_root() / "models" / "best"


def test_probabilities_are_the_softmax_of_the_logits_and_agree_with_predict(folder, images):
    predictor = load_model(folder, backend="onnx")

    p = predictor.probabilities(images, orientation="upright", batch_size=10)

    assert p.shape == (64, len(CHARACTERS)) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    logits = predictor.logits(images, orientation="upright")
    np.testing.assert_allclose(p, torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert (p.argmax(1) == predictor.predict(images, orientation="upright").classes).all()


def test_a_missing_fp32_onnx_file_is_exported_again_from_the_weights(folder, images, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "clone")
    (copy / ONNX_FP32).unlink()  # as on a fresh clone: the fp32 file stays out of git

    rebuilt = load_model(copy, backend="onnx").predict(images, orientation="upright")

    expected = load_model(folder, backend="torch").predict(images, orientation="upright")
    assert np.array_equal(rebuilt.classes, expected.classes)
    np.testing.assert_allclose(rebuilt.probabilities, expected.probabilities, atol=1e-5)
    assert (copy / ONNX_FP32).is_file()
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in folder.iterdir())
