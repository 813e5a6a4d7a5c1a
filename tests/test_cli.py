"""The command line: check-data on the real files, and the train command's wiring."""

from __future__ import annotations

import pytest

import annlib.data
import annlib.experiments
from annlib.cli import main

BYMERGE = [
    "emnist-bymerge-test-images-idx3-ubyte.gz",
    "emnist-bymerge-test-labels-idx1-ubyte.gz",
    "emnist-bymerge-mapping.txt",
]


def test_check_data_reports_the_bymerge_files_ok(emnist_file, capsys):
    root = emnist_file(BYMERGE[0]).parent

    assert main(["check-data", "--data-dir", str(root)]) == 0

    lines = capsys.readouterr().out.splitlines()
    status = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in lines}
    assert len(lines) == 30
    for name in BYMERGE:
        assert status[name] == "ok"
    assert status["emnist-bymerge-train-images-idx3-ubyte.gz"] == "missing"


def test_check_data_on_an_empty_folder(tmp_path, capsys):
    assert main(["check-data", "--data-dir", str(tmp_path)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30
    assert all(line.endswith(" missing") for line in lines)


def test_check_data_fails_on_a_corrupt_file(emnist_file, tmp_path, capsys):
    name = "emnist-mnist-test-labels-idx1-ubyte.gz"
    data = bytearray(emnist_file(name).read_bytes())
    data[100] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))

    assert main(["check-data", "--data-dir", str(tmp_path)]) == 1
    assert "1 corrupt file(s)" in capsys.readouterr().out


def test_train_command_passes_its_options(monkeypatch, tmp_path, capsys):
    calls = {}

    def build_study(name, root):
        calls["study"] = (name, root)
        return "a study"

    def train_model(model, study, profile, tag, retrain, output_dir, **overrides):
        calls["train"] = (model, study, profile, tag, retrain, output_dir, overrides)
        return {"run": "lenet5-x", "best_val_accuracy": 0.5, "best_epoch": 2, "train_seconds": 3.0}

    monkeypatch.setattr(annlib.data, "build_study", build_study)
    monkeypatch.setattr(annlib.experiments, "train_model", train_model)

    argv = ["train", "lenet5", "--profile", "smoke", "--tag", "x", "--precision", "fp32"]
    argv += ["--epochs", "2"]
    argv += ["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 0

    assert calls["study"] == (None, str(tmp_path))
    assert calls["train"] == (
        "lenet5",
        "a study",
        "smoke",
        "x",
        False,
        str(tmp_path / "out"),
        {"epochs": 2, "precision": "fp32"},
    )
    assert "lenet5-x: best validation accuracy 0.5000 at epoch 2" in capsys.readouterr().out


def test_unknown_command_or_profile_exits():
    with pytest.raises(SystemExit):
        main(["fly"])
    with pytest.raises(SystemExit):
        main(["train", "lenet5", "--profile", "fast"])
