"""Benchmark the exported model's deployment form against eager float32, in one process.

Prints the throughput ratio at batch 1 and at a large batch, and the validation accuracy of both
forms, beside the targets (at least 5x at the large batch, 10x at batch 1, at most 0.2 points of
accuracy lost). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import pandas as pd
import torch

from annlib.data import build_study
from annlib.export import CARD, ONNX_FP32, ONNX_INT8, fp32_onnx, load_torch_model
from annlib.inference import BASELINE, Form, build_forms, form_accuracy, onnx_form, time_form
from annlib.paths import results_dir
from annlib.records import atomic_path, environment, load_json, save_json
from annlib.selection import load_selection

TARGETS = {1: 10.0, "large": 5.0}
MAX_LOSS_POINTS = 0.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None, help="EMNIST folder (validation accuracy)")
    parser.add_argument("--study", default=None, help="default: the one the data folder allows")
    parser.add_argument("--model-dir", default=None, help="default: models/ of notebook 04")
    parser.add_argument("--batch", type=int, default=512, help="the large batch")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per measure")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per form")
    parser.add_argument("--out", default=None, help="CSV (default results/benchmark_inference.csv)")
    return parser.parse_args()


def model_folder(study: str, given: str | None) -> Path:
    """Return the exported model's folder: given, else notebook 04's for the chosen model."""
    if given is not None:
        return Path(given)
    results = results_dir("cpu") / study
    chosen = load_selection(results)["chosen"]
    return results.parent.parent / "models" / f"emnist-{study}-{chosen}"


def deployed_form(folder: Path, card: dict, model: torch.nn.Module, calibration) -> Form:
    """Return the deployment form from the folder's ONNX file, else built again from the model.

    The fp32 file, which stays out of git, is exported again from the weights where it is
    missing (annlib.export.fp32_onnx).
    """
    name = card["deployment"]["form"]
    if name == "onnxruntime-fp32":
        return onnx_form(name, f"saved {ONNX_FP32}", fp32_onnx(folder, card))
    if name == "onnxruntime-int8" and (folder / ONNX_INT8).is_file():
        return onnx_form(name, f"saved {ONNX_INT8}", (folder / ONNX_INT8).read_bytes())
    return build_forms(model, calibration, names=[name])[name]


def main() -> None:
    args = parse_args()
    study = build_study(args.study, args.data_dir)
    folder = model_folder(study.name, args.model_dir)
    card_path = folder / CARD
    if not card_path.is_file():
        raise SystemExit(
            f"{card_path} not found: run notebooks/04_optimization.ipynb first (it exports the "
            "model), or give --model-dir."
        )
    card = load_json(card_path)
    deployed_name = card["deployment"]["form"]

    model = load_torch_model(folder, card)
    eager = build_forms(model, study.X_train[:0], names=[BASELINE])[BASELINE]
    deployed = deployed_form(folder, card, model, study.X_train[:512])

    rows = []
    for batch in (1, args.batch):
        times: dict[str, list[float]] = {BASELINE: [], deployed_name: []}
        for _ in range(args.repeats):  # alternate, so that drifts hit both sides alike
            for name, form in ((BASELINE, eager), (deployed_name, deployed)):
                times[name].append(time_form(form, batch, args.seconds)["ms_per_batch"])
        eager_ms, deployed_ms = (statistics.median(times[n]) for n in (BASELINE, deployed_name))
        rows.append(
            {
                "batch": batch,
                "eager_ms": eager_ms,
                "deployed_ms": deployed_ms,
                "ratio": eager_ms / deployed_ms,
                "target": TARGETS[1 if batch == 1 else "large"],
            }
        )

    accuracy = {
        n: form_accuracy(f, study.X_val, study.y_val)
        for n, f in ((BASELINE, eager), (deployed_name, deployed))
    }
    loss = (accuracy[BASELINE] - accuracy[deployed_name]) * 100

    threads = torch.get_num_threads()
    print(f"model {folder.name}, deployment form {deployed_name}, {threads} threads")
    for row in rows:
        verdict = "met" if row["ratio"] >= row["target"] else "missed"
        print(
            f"batch {row['batch']:4d}: eager float32 {row['eager_ms']:8.3f} ms, "
            f"{deployed_name} {row['deployed_ms']:8.3f} ms -> {row['ratio']:5.1f}x "
            f"(target {row['target']:.0f}x: {verdict})"
        )
    verdict = "met" if loss <= MAX_LOSS_POINTS else "missed"
    print(
        f"validation accuracy: eager float32 {accuracy[BASELINE]:.4f}, {deployed_name} "
        f"{accuracy[deployed_name]:.4f} ({-loss:+.2f} points; at most -{MAX_LOSS_POINTS}: "
        f"{verdict})"
    )

    table = pd.DataFrame(rows).assign(
        form=deployed_name,
        eager_accuracy=accuracy[BASELINE],
        deployed_accuracy=accuracy[deployed_name],
        threads=threads,
    )
    out = Path(args.out) if args.out else results_dir("cpu") / "benchmark_inference.csv"
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    save_json(out.with_suffix(".environment.json"), environment())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
