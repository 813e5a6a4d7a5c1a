"""Cached training runs, profiles, output folders and result files."""

from __future__ import annotations

import json

import pytest

from annlib import experiments
from annlib.experiments import history_path, run_name, train_model
from annlib.paths import checkpoints_dir, output_root, project_root, results_dir
from annlib.profiles import PROFILES, get_profile
from annlib.records import load_json, save_csv, save_json


class FakeFit:
    """Stands in for annlib.train.fit: records its arguments and returns a complete history."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, net, train, val, config, run_dir, path, info=None):
        self.calls.append(
            {"train": train, "val": val, "config": config, "run_dir": run_dir, "path": path}
        )
        return {"complete": True, "fake": True, **(info or {})}


def refuse(*args, **kwargs):
    raise AssertionError("fit must not be called for a saved, complete run")


def test_smoke_run_trains_once_then_reads_the_saved_history(study, tmp_path, monkeypatch):
    history = train_model("lenet5", study, "smoke", output_dir=tmp_path, precision="fp32")
    path = tmp_path / "results" / "bymerge-small" / "train" / "lenet5.json"
    mtime = path.stat().st_mtime_ns

    assert history["complete"] is True
    assert history["run"] == "lenet5" and history["profile"] == "smoke"
    assert history["study"] == "bymerge-small"
    assert history["parameters"] == 64_851 and history["flops"] == 839_256
    assert history["train_size"] == 3000 and history["val_size"] == 1000
    assert history["epochs_run"] == 1 and history["config"]["precision"] == "fp32"
    assert (tmp_path / "checkpoints" / "bymerge-small" / "lenet5" / "best.pt").is_file()

    monkeypatch.setattr(experiments, "fit", refuse)
    again = train_model("lenet5", study, "smoke", output_dir=tmp_path, precision="fp32")

    assert again == json.loads(path.read_text())
    assert again["epochs"] == history["epochs"]
    assert path.stat().st_mtime_ns == mtime


def test_profile_sizes_and_recipe_reach_fit(study, tmp_path, monkeypatch):
    fake = FakeFit()
    monkeypatch.setattr(experiments, "fit", fake)

    history = train_model("vgg-small", study, "smoke", tag="lr1", output_dir=tmp_path, lr=1e-3)

    (call,) = fake.calls
    assert history["run"] == "vgg-small-lr1"
    assert len(call["train"][1]) == 3000 and len(call["val"][1]) == 1000
    assert call["config"].epochs == 1 and call["config"].lr == 1e-3
    assert call["config"].batch_size == experiments.RECIPE.batch_size
    assert call["path"] == tmp_path / "results" / "bymerge-small" / "train" / "vgg-small-lr1.json"
    assert call["run_dir"] == tmp_path / "checkpoints" / "bymerge-small" / "vgg-small-lr1"


def test_incomplete_saved_run_is_resumed_and_retrain_starts_over(study, tmp_path, monkeypatch):
    fake = FakeFit()
    monkeypatch.setattr(experiments, "fit", fake)
    path = history_path("bymerge-small", "smoke", "lenet5", tmp_path)
    save_json(path, {"complete": False, "epochs": []})
    run_dir = tmp_path / "checkpoints" / "bymerge-small" / "lenet5"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(b"old")

    train_model("lenet5", study, "smoke", output_dir=tmp_path)
    assert len(fake.calls) == 1
    assert (run_dir / "checkpoint.pt").exists()

    save_json(path, {"complete": True, "epochs": []})
    train_model("lenet5", study, "smoke", retrain=True, output_dir=tmp_path)
    assert len(fake.calls) == 2
    assert not (run_dir / "checkpoint.pt").exists()


def test_epochs_override_beats_the_profile_budget(study, tmp_path, monkeypatch):
    """Regression: epochs used to reach dataclasses.replace twice (TypeError)."""
    fake = FakeFit()
    monkeypatch.setattr(experiments, "fit", fake)

    train_model("lenet5", study, "smoke", output_dir=tmp_path, epochs=3, seed=5)

    assert fake.calls[0]["config"].epochs == 3
    assert fake.calls[0]["config"].seed == 5


def test_run_name():
    assert run_name("lenet5") == "lenet5"
    assert run_name("lenet5", "bf16") == "lenet5-bf16"


def test_profiles():
    assert set(PROFILES) == {"smoke", "cpu", "full"}
    assert get_profile("smoke").epochs_for("resnet50") == 1
    assert get_profile("cpu").epochs_for("lenet5") == 20
    assert get_profile("cpu").epochs_for("resnet50") == 3
    assert get_profile("cpu").epochs_for("vgg-small") == 10
    assert get_profile("cpu").train_images is None
    with pytest.raises(ValueError, match="smoke, cpu, full"):
        get_profile("fast")


def test_output_folders(tmp_path):
    assert output_root("cpu") == project_root()
    assert output_root("smoke") == project_root() / "runs" / "smoke"
    assert output_root("cpu", tmp_path) == tmp_path
    assert results_dir("smoke", tmp_path) == tmp_path / "results"
    assert checkpoints_dir("cpu", tmp_path) == tmp_path / "checkpoints"
    assert (tmp_path / "results").is_dir() and (tmp_path / "checkpoints").is_dir()


def test_json_and_csv_are_written_whole(tmp_path):
    import pandas as pd

    obj = {"a": 1.5, "b": [1, 2], "path": tmp_path}
    path = save_json(tmp_path / "sub" / "x.json", obj)
    save_csv(tmp_path / "t.csv", pd.DataFrame({"m": ["a", "b"], "v": [1, 2]}))

    assert load_json(path) == {"a": 1.5, "b": [1, 2], "path": str(tmp_path)}
    assert (tmp_path / "t.csv").read_text().splitlines() == ["m,v", "a,1", "b,2"]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.json"]


def test_saved_run_with_other_settings_is_not_returned(study, tmp_path, monkeypatch):
    monkeypatch.setattr(experiments, "fit", FakeFit())
    path = history_path("bymerge-small", "smoke", "lenet5", tmp_path)
    save_json(path, {"complete": True, "epochs": [], "config": {"epochs": 1}})

    with pytest.raises(ValueError, match="other settings"):
        train_model("lenet5", study, "smoke", output_dir=tmp_path)


def fake_precision_runs(monkeypatch, bf16_native: bool, accuracies=(0.80, 0.81, 0.805)):
    """Make train_model return three complete runs: fp32 s0, fp32 s1, bf16 s0."""
    runs = iter(accuracies)

    def fake_train(model, study, profile, tag, *args, precision, **kwargs):
        return {
            "epochs_run": 2,
            "best_val_accuracy": next(runs),
            "train_images_per_s": 100.0 if precision == "fp32" else 300.0,
            "environment": {"bf16_native": bf16_native and precision == "bf16"},
        }

    monkeypatch.setattr(experiments, "train_model", fake_train)


@pytest.mark.parametrize("native", [True, False])
def test_precision_decision_follows_the_hardware_the_bf16_run_used(monkeypatch, native):
    # This machine's own support must not matter: a saved comparison keeps its decision.
    monkeypatch.setattr("annlib.records.bf16_native", lambda: not native)
    fake_precision_runs(monkeypatch, native)

    table, decision = experiments.compare_precision(None, "smoke", 2)

    assert table.precision.tolist() == ["fp32", "fp32", "bf16"]
    assert decision["bf16_native"] is native and decision["same_accuracy"] is True
    assert decision["precision"] == ("bf16" if native else "fp32")
    assert decision["bf16_speed_vs_fp32"] == pytest.approx(3.0)


def test_bf16_with_lower_accuracy_is_not_chosen(monkeypatch):
    fake_precision_runs(monkeypatch, True, accuracies=(0.80, 0.801, 0.78))
    _, decision = experiments.compare_precision(None, "smoke", 2)
    assert decision["same_accuracy"] is False and decision["precision"] == "fp32"


def test_study_precision_reads_notebook_02s_decision(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_baselines"):
        experiments.study_precision(tmp_path)
    save_json(tmp_path / experiments.PRECISION_FILE, {"precision": "fp32"})
    assert experiments.study_precision(tmp_path) == "fp32"


def test_environment_records_the_inference_runtime_version():
    import numpy
    import onnxruntime

    from annlib.records import environment, installed_version

    assert installed_version("numpy") == numpy.__version__
    assert installed_version("no-such-package-here") is None
    assert environment()["onnxruntime"] == onnxruntime.__version__
