"""The report builder on small made-up results: the PDF, its pending sections, its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annlib import plots, testeval
from annlib.cli import main
from annlib.pdfreport import ReportError, build_report, pending_sections
from annlib.records import save_csv, save_json

CHARS = ["0", "1", "A"]
ENV = {"cpu": "Test CPU", "cpu_count": 2, "torch": "0.0"}


def png(path: Path) -> None:
    """Write a small grey PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (40, 30), 200).save(path)


def write_required(results: Path, figures: Path) -> None:
    """Write the files of notebooks 01 to 03 that the report needs, with made-up numbers."""
    save_json(
        results / "data_summary.json",
        {
            "study": "bymerge-small",
            "classes": 3,
            "train": 900,
            "validation": 100,
            "test": 300,
            "split_file": "bymerge-small-seed0-val0.1.npz",
            "removed_from_pool": 12,
            "images_shared": {"train_val": 0, "train_test": 0, "val_test": 0},
        },
    )
    counts = pd.DataFrame({"class": CHARS, "train": [400, 450, 50], "validation": [44, 50, 6]})
    save_csv(results / "class_counts.csv", counts.assign(test=[130, 150, 20]))
    baselines = {
        "model": ["lenet5", "resnet50"],
        "parameters": [64851, 23598063],
        "MFLOPs/image": [0.84, 156.1],
        "epochs": [20, 3],
        "train min (steps only)": [3.2, 40.4],
        "median s/epoch": [9.6, 666.5],
        "best val acc": [0.8883, 0.8661],
        "latency b=1 (ms)": [0.31, 15.9],
        "img/s b=512": [32570.0, 766.6],
        "threads": [2, 2],
        "layout b=1 / large": ["channels_last / channels_last", "contiguous / channels_last"],
    }
    save_csv(results / "baselines.csv", pd.DataFrame(baselines))
    candidates = {
        "model": ["vgg-8", "mobilenetv2-finetune"],
        "family": ["VGG-style", "MobileNetV2 (torchvision)"],
        "val_accuracy": [0.877, 0.8967],
        "val_spread": [0.0, 0.0008],
        "seeds": [1, 2],
        "epochs": [3, 3],
        "latency_ms": [0.43, 8.2],
        "images_per_s": [20130.6, 1155.3],
        "parameters": [110743, 2284079],
        "MFLOPs": [2.58, 33.25],
        "on_front": [True, True],
    }
    save_csv(results / "candidates.csv", pd.DataFrame(candidates))
    save_json(
        results / "selection.json",
        {
            "rule": "The fastest candidate within `tolerance` of the best.",
            "tolerance": 0.005,
            "chosen": "mobilenetv2-finetune",
            "chosen_val_accuracy": 0.8967,
            "chosen_latency_ms": 8.2,
            "fastest": "vgg-8",
            "fastest_latency_ms": 0.43,
            "eligible": ["mobilenetv2-finetune"],
            "budget_epochs": 3,
            "environment": ENV,
        },
    )
    png(figures / "03_pareto.png")


def write_later(results: Path, figures: Path) -> None:
    """Write what notebooks 04 and 05 save: tuning, inference forms, deployment, test results."""
    trials = {
        "number": [0, 1, 2],
        "state": ["COMPLETE", "PRUNED", "COMPLETE"],
        "val_accuracy": [0.87, 0.80, 0.88],
        "duration": [300.0, 120.0, 310.0],
        "lr": [0.003, 0.01, 0.002],
        "batch_size": [256, 512, 128],
        "epochs_run": [3, 2, 3],
    }
    save_csv(results / "tuning_trials.csv", pd.DataFrame(trials))
    forms = pd.DataFrame(
        {
            "form": ["eager-fp32", "eager-fp32", "onnxruntime-int8", "onnxruntime-int8", "bf16"],
            "batch": [1, 512, 1, 512, 1],
            "ms_per_batch": [8.2, 440.0, 0.9, 60.0, None],
            "images_per_s": [122.0, 1163.6, 1111.1, 8533.3, None],
            "speedup": [1.0, 1.0, 9.1, 7.3, None],
            "accuracy": [0.905, 0.905, 0.904, 0.904, None],
            "accuracy_diff_points": [0.0, 0.0, -0.1, -0.1, None],
            "agreement": [1.0, 1.0, 0.995, 0.995, None],
            "threads": [2, 2, 2, 2, None],
            "error": [None, None, None, None, "no native bfloat16"],
        }
    )
    save_csv(results / "inference_forms.csv", forms)
    save_json(
        results / "deployment.json",
        {
            "form": "onnxruntime-int8",
            "rule": "highest throughput among forms losing at most 0.2 points",
            "large_batch": 512,
            "images_per_s": 8533.3,
            "speedup": 7.3,
            "latency_batch": 1,
            "latency_ms": 0.9,
            "accuracy": 0.904,
            "accuracy_diff_points": -0.1,
            "rejected_for_accuracy": [],
            "unavailable": ["bf16"],
            "vs_resnet50_large_batch": 11.1,
        },
    )

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probabilities = rng.dirichlet(np.ones(3), 300)
    probabilities[np.arange(300), y] += 0.8 * (rng.random(300) < 0.9)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    summary = testeval.summarize(y, probabilities, CHARS, k=2, n_boot=200)
    mnist = testeval.summarize(y[:100], probabilities[:100], CHARS, k=2, n_boot=200)
    summary |= {"model": "mobilenetv2-finetune", "form": "onnxruntime-int8"}
    summary["mnist"] = mnist | {"removed_seen": 7}
    save_json(results / "test_summary.json", summary)
    save_csv(results / "test_per_class.csv", testeval.per_class_table(y, predicted, CHARS))
    save_csv(results / "test_confused_pairs.csv", testeval.confused_pairs(y, predicted, CHARS))
    plots.confusion_plot(testeval.confusion(y, predicted, 3), CHARS, figures / "05_confusion.png")
    wrong = np.flatnonzero(predicted != y)[:4]
    images = rng.integers(0, 256, (len(wrong), 28, 28), dtype=np.uint8)
    plots.misclassified_gallery(
        images,
        [CHARS[i] for i in y[wrong]],
        [CHARS[i] for i in predicted[wrong]],
        figures / "05_misclassified.png",
    )


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """A results and a figures folder holding the required files only."""
    results, figures = (
        tmp_path / "results" / "bymerge-small",
        tmp_path / "figures" / "bymerge-small",
    )
    write_required(results, figures)
    return results, figures


def test_report_from_earlier_results_says_what_is_pending(folders, tmp_path):
    results, figures = folders
    pdf = build_report(results, figures, tmp_path / "out" / "report.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in pdf.parent.iterdir()] == ["report.pdf"]  # no temporary file left
    pending = pending_sections(results, figures)
    assert pending == [["tuning_trials"], ["inference_forms", "deployment"], ["test_summary"]]


def test_report_with_every_section(folders, tmp_path):
    results, figures = folders
    write_later(results, figures)
    pdf = build_report(results, figures)  # default output: beside results/ and figures/
    assert pdf == tmp_path / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pending_sections(results, figures) == []


def test_missing_required_file_is_named(folders, tmp_path):
    results, figures = folders
    (results / "baselines.csv").unlink()
    with pytest.raises(ReportError, match=r"baselines\.csv \(from 02_baselines\)"):
        build_report(results, figures, tmp_path / "report.pdf")
    assert not (tmp_path / "report.pdf").exists()


def test_report_command(folders, tmp_path, capsys):
    results, figures = folders
    output = tmp_path / "r.pdf"
    args = ["report", "--results", str(results), "--figures", str(figures), "--output", str(output)]
    assert main(args) == 0
    assert output.read_bytes()[:5] == b"%PDF-"
    assert str(output) in capsys.readouterr().out

    (figures / "03_pareto.png").unlink()
    assert main(args) == 2
    assert "03_pareto.png" in capsys.readouterr().err
