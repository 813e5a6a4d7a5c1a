"""The README's results table is the one the saved results give."""

import json

import pandas as pd

from annlib.paths import project_root
from annlib.report import (
    comparison_table,
    final_table,
    readme_block,
    results_table,
    update_readme,
)


def test_readme_table_matches_saved_results():
    readme = (project_root() / "README.md").read_text()

    assert readme_block(project_root() / "results") in readme


def test_results_table_reads_every_study(tmp_path):
    for study, acc in (("balanced", 0.9), ("bymerge-small", 0.8)):
        (tmp_path / study).mkdir()
        row = {"model": "lenet5", "parameters": 64851, "best val acc": acc, "img/s b=512": 1234.5}
        pd.DataFrame([row]).to_csv(tmp_path / study / "baselines.csv", index=False)

    table = results_table(tmp_path)

    assert "| balanced " in table and "| bymerge-small " in table
    assert "90.00%" in table and "64,851" in table and "1,234" in table


def test_update_readme_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    start, end = readme_block(tmp_path).split("\n")[0], readme_block(tmp_path).split("\n")[-1]
    readme.write_text(f"intro\n{start}\nold\n{end}\noutro\n")

    assert update_readme(readme, tmp_path)
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("outro\n")
    assert "old" not in readme.read_text()
    assert not update_readme(readme, tmp_path)


def test_final_table_shows_the_deployed_form_and_the_test_result_once_there(tmp_path):
    folder = tmp_path / "bymerge-small"
    folder.mkdir()
    deployment = {  # as DeploymentRule.apply writes it, plus what notebook 04 adds
        "model": "vgg-32",
        "form": "onnxruntime-int8",
        "accuracy": 0.9012,
        "large_batch": 512,
        "images_per_s": 12800.0,
        "latency_batch": 1,
        "latency_ms": 0.25,
        "vs_resnet50_large_batch": 3.25,
    }
    (folder / "deployment.json").write_text(json.dumps(deployment))

    before = final_table(tmp_path)
    test = {"accuracy": 0.9, "accuracy_low": 0.89, "accuracy_high": 0.91, "macro_accuracy": 0.88}
    (folder / "test_summary.json").write_text(json.dumps(test))
    after = final_table(tmp_path)

    assert "| onnxruntime-int8 " in before and "| 0.25 " in before and "| 12,800 " in before
    assert "90.12%" in before and "| 3.2 " in before and "not evaluated yet" in before
    assert "90.00% (89.00% to 91.00%)" in after and "88.00%" in after


def test_no_final_table_before_notebook_04(tmp_path):
    (tmp_path / "bymerge-small").mkdir()

    assert final_table(tmp_path) is None


def test_comparison_table_marks_untested_models_and_formats_timings(tmp_path):
    folder = tmp_path / "bymerge-small"
    folder.mkdir()
    assert comparison_table(tmp_path) is None
    rows = [
        {"model": "lenet5", "val_accuracy": 0.8883, "test_accuracy": 0.8876, "test_low": 0.8858,
         "test_high": 0.8895, "onnx_latency_ms": 0.1234, "onnx_images_per_s": 45678.9,
         "scored": "earlier run"},
        {"model": "resnet50", "val_accuracy": 0.8661},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "test_comparison.csv", index=False)

    table = comparison_table(tmp_path)

    assert "88.76% (88.58% to 88.95%)" in table and "| 0.123 " in table and "45,679" in table
    assert "86.61%" in table and "not tested" in table and "nan" not in table
    assert "| earlier run " in table
