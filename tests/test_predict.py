"""python -m annlib predict: image files of characters through an exported model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_images import png_header

from annlib.cli import main
from annlib.data.studies import subsample
from annlib.export import deployed_backend, find_model_folder, load_model, save_model
from annlib.images import load_for_model
from annlib.inference import export_onnx, quantize_int8
from annlib.models import create_model
from annlib.train import TrainConfig, fit


@pytest.fixture(scope="module")
def folder(study, tmp_path_factory):
    """vgg-8 trained briefly on 4,000 images, exported with int8 as its deployment form."""
    torch.manual_seed(0)
    net = create_model("vgg-8")
    train = subsample(study.X_train, study.y_train, 4000, seed=0)
    val = subsample(study.X_val, study.y_val, 500, seed=0)
    fit(net, train, val, TrainConfig(epochs=2, precision="fp32", batch_size=128))
    int8 = quantize_int8(export_onnx(net.eval()), train[0][:256])
    root = tmp_path_factory.mktemp("models")
    return save_model(
        net,
        "vgg-8",
        study.classes,
        root / "vgg-8",
        deployment={"form": "onnxruntime-int8"},
        onnx_int8=int8,
    )


def run_predict(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_emnist_test_images_as_png_files_predict_as_the_originals(
    folder, bymerge_test, tmp_path, capsys
):
    X = bymerge_test[0][::1500][:64]  # upright, as read_images returns them
    paths = []
    for i, x in enumerate(X):
        Image.fromarray(x).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")

    code, out, _ = run_predict(capsys, *paths, "--model", folder, "--backend", "torch")

    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(X) and lines[0].startswith(f"{paths[0]}: ")
    from_files = [line.split(": ", 1)[1].split()[0] for line in lines]
    from_arrays = load_model(folder).predict(X, orientation="upright").characters
    agreement = np.mean(np.array(from_files) == np.array(from_arrays))
    assert agreement >= 0.9, agreement
    # The command goes through the same preprocessing as the API.
    api = load_model(folder).predict(load_for_model(paths), orientation="upright").characters
    assert from_files == api


def test_the_default_backend_is_the_deployment_form(folder, bymerge_test, tmp_path, capsys):
    assert deployed_backend(folder) == "onnx-int8"
    assert find_model_folder(folder.parent) == folder
    Image.fromarray(bymerge_test[0][0]).save(tmp_path / "a.png")
    code, out, _ = run_predict(capsys, tmp_path / "a.png", "--model", folder, "--top-k", "2")
    expected = load_model(folder, "onnx-int8").predict(
        load_for_model([tmp_path / "a.png"]), orientation="upright", top_k=2
    )
    assert code == 0
    assert out.split(": ", 1)[1].split()[0] == expected.characters[0]
    assert out.count(".") >= 2  # two probabilities


def test_bad_images_give_a_clear_error(folder, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(blank)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = png_header(tmp_path / "huge.png", 10_000, 5_000)

    for path, message in (
        (blank, "seems blank"),
        (text, "not an image file"),
        (huge, "megapixels"),
    ):
        code, out, err = run_predict(capsys, path, "--model", folder)
        assert code == 2 and out == ""
        assert err.startswith("error: ") and str(path) in err and message in err, err


def test_a_missing_model_folder_says_how_to_make_one(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    code, _, err = run_predict(capsys, image, "--model", tmp_path / "nothing")
    assert code == 2 and "No model folder" in err
    with pytest.raises(FileNotFoundError, match="04_optimization"):
        find_model_folder(tmp_path)
