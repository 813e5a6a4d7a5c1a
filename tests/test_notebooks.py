"""The numbered notebooks run end to end in the smoke profile on the real EMNIST files."""

import json

import pandas as pd
import pytest

from annlib.export import CARD
from annlib.inference import BASELINE
from annlib.pipeline import notebooks, run_notebooks
from annlib.selection import BASELINES, CANDIDATES, load_selection


def error_outputs(path):
    """Return the error outputs of an executed notebook."""
    cells = json.loads(path.read_text())["cells"]
    return [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_notebooks_run_in_smoke_profile(emnist_dir, weights_dir, tmp_path):
    written = run_notebooks(
        "smoke", "bymerge-small", str(emnist_dir), output_dir=tmp_path, weights=str(weights_dir)
    )

    assert [p.name for p in written] == [nb.name for nb in notebooks()]
    for path in written:
        assert path.parent == tmp_path / "notebooks"
        assert error_outputs(path) == []
    figures = {p.name for p in (tmp_path / "figures" / "bymerge-small").glob("*.png")}
    assert {
        "01_samples.png",
        "01_class_distribution.png",
        "02_learning_curves.png",
        "03_learning_curves.png",
        "03_pareto.png",
        "04_tuning_history.png",
        "04_tuning_front.png",
        "04_final_learning_curves.png",
        "04_inference_forms.png",
        "04_tuning_importance.png",
        "05_confusion.png",
        "05_misclassified.png",
        "05_tradeoff.png",
        "05_final_learning_curves.png",
    } <= figures
    results = tmp_path / "results" / "bymerge-small"
    assert (results / "baselines.csv").read_text().count("\n") == 3  # header, lenet5, resnet50
    candidates = pd.read_csv(results / "candidates.csv")
    assert set(CANDIDATES) | set(BASELINES) == set(candidates.model)
    assert candidates.on_front.any()
    choice = load_selection(results)
    assert choice["chosen"] in CANDIDATES
    assert choice["chosen"] in choice["eligible"]
    forms = pd.read_csv(results / "inference_forms.csv")
    assert {BASELINE, "onnxruntime-int8"} <= set(forms.form)
    deployment = json.loads((results / "deployment.json").read_text())
    assert deployment["form"] in set(forms.form)
    assert deployment["model"] == choice["chosen"]
    card = json.loads(
        (tmp_path / "models" / f"emnist-bymerge-small-{choice['chosen']}" / CARD).read_text()
    )
    assert card["run"] == deployment["run"]
    assert len(card["characters"]) == card["num_classes"] == 47
    test = json.loads((results / "test_summary.json").read_text())
    assert test["form"] == deployment["form"] and test["run"] == deployment["run"]
    assert test["accuracy_low"] <= test["accuracy"] <= test["accuracy_high"]
    assert test["accuracy"] <= test["top_k_accuracy"] and test["top_k"] == 5
    assert 0 < test["mnist"]["removed_seen"] < test["mnist"]["n"]
    assert len(pd.read_csv(results / "test_per_class.csv")) == 47
    comparison = pd.read_csv(results / "test_comparison.csv")
    assert comparison.model.iloc[:2].tolist() == ["lenet5", "resnet50"]
    assert (comparison.scored == "this run").all()  # the smoke run has every checkpoint
    assert comparison.test_accuracy.between(0, 1).all()
    assert (comparison.onnx_latency_ms > 0).all() and (comparison.onnx_images_per_s > 0).all()
    assert comparison.final.tolist() == [False] * (len(comparison) - 1) + [True]
    assert comparison.on_front.any()  # the fastest model is never beaten on both axes
    published = pd.read_csv(results / "test_published.csv")
    assert published.source.iloc[:2].tolist() == ["this study", "this study"]
    assert published.reference.notna().all()
    assert published.test_accuracy.iloc[:2].tolist() == pytest.approx(
        [test["accuracy"], test["macro_accuracy"]]
    )
