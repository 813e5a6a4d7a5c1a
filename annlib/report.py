"""The README's results table, built from the saved results and never typed by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from annlib.paths import project_root
from annlib.records import load_json, write_atomic

START = "<!-- results:start (written by python -m annlib run; do not edit) -->"
END = "<!-- results:end -->"
COMPARISON_COLUMNS = [
    "model",
    "val_accuracy",
    "test_accuracy",
    "test_low",
    "test_high",
    "onnx_latency_ms",
    "onnx_images_per_s",
    "scored",
]


def results_table(results: Path) -> str:
    """Return a markdown table of every study's saved baselines.csv under a results folder."""
    parts = []
    for csv in sorted(results.glob("*/baselines.csv")):
        table = pd.read_csv(csv)
        table.insert(0, "study", csv.parent.name)
        parts.append(table)
    if not parts:
        return "No results saved yet: run `python -m annlib run` first."
    table = pd.concat(parts)
    table["best val acc"] = (table["best val acc"] * 100).map("{:.2f}%".format)
    for column in table.columns:
        if column == "parameters" or column.startswith("img/s"):
            table[column] = table[column].map("{:,.0f}".format)
        elif table[column].dtype.kind == "f":
            table[column] = table[column].map("{:.3g}".format)
    return table.to_markdown(index=False, disable_numparse=True)


def final_row(folder: Path) -> dict[str, str] | None:
    """Return a study's deployed model as one row: validation, speed and test numbers."""
    if not (folder / "deployment.json").is_file():
        return None
    deployment = load_json(folder / "deployment.json")
    row = {
        "study": folder.name,
        "model": deployment["model"],
        "deployment form": deployment["form"],
        "val acc": f"{deployment['accuracy']:.2%}",
        f"latency b={deployment['latency_batch']} (ms)": f"{deployment['latency_ms']:.3g}",
        f"img/s b={deployment['large_batch']}": f"{deployment['images_per_s']:,.0f}",
        "x ResNet-50 img/s (same run)": f"{deployment['vs_resnet50_large_batch']:.1f}",
        "test acc (95% interval)": "not evaluated yet",
        "test class-averaged": "",
    }
    if (folder / "test_summary.json").is_file():
        test = load_json(folder / "test_summary.json")
        row["test acc (95% interval)"] = (
            f"{test['accuracy']:.2%} ({test['accuracy_low']:.2%} to {test['accuracy_high']:.2%})"
        )
        row["test class-averaged"] = f"{test['macro_accuracy']:.2%}"
    return row


def final_table(results: Path) -> str | None:
    """Return a markdown table of every study's deployed model, or None before notebook 04."""
    rows = [row for folder in sorted(results.glob("*/")) if (row := final_row(folder))]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True) if rows else None


def formatted(values: pd.Series, spec: str) -> pd.Series:
    """Return values formatted with spec, blank where missing."""
    return values.map(lambda v: "" if pd.isna(v) else format(v, spec))


def comparison_table(results: Path) -> str | None:
    """Return a markdown table of every study's models on its test partition, or None before."""
    parts = []
    for csv in sorted(results.glob("*/test_comparison.csv")):
        table = pd.read_csv(csv).reindex(columns=COMPARISON_COLUMNS)
        interval = formatted(table.test_low, ".2%") + " to " + formatted(table.test_high, ".2%")
        test = formatted(table.test_accuracy, ".2%") + " (" + interval + ")"
        part = {
            "study": csv.parent.name,
            "model": table.model,
            "val acc": formatted(table.val_accuracy, ".2%"),
            "test acc (95% interval)": test.where(table.test_accuracy.notna(), "not tested"),
            "ORT fp32 ms b=1": formatted(table.onnx_latency_ms, ".3g"),
            "ORT fp32 img/s": formatted(table.onnx_images_per_s, ",.0f"),
            "scored": table.scored.fillna(""),
        }
        parts.append(pd.DataFrame(part))
    if not parts:
        return None
    return pd.concat(parts).to_markdown(index=False, disable_numparse=True)


def readme_block(results: Path) -> str:
    """Return the README's generated block: markers around the results tables."""
    final, compared = final_table(results), comparison_table(results)
    tables = results_table(results)
    if final:
        tables += f"\n\nThe deployed model (notebooks 04 and 05):\n\n{final}"
    if compared:
        tables += (
            "\n\nEvery model on the test partition, timed in ONNX Runtime float32 in one run "
            "(notebook 05; `scored` says whether a row comes from that run or, for weights not "
            f"in this checkout, from an earlier one):\n\n{compared}"
        )
    return f"{START}\n{tables}\n{END}"


def update_readme(readme: Path | None = None, results: Path | None = None) -> bool:
    """Rewrite the generated block of the README from saved results; return True if it changed."""
    readme = readme or project_root() / "README.md"
    results = results or project_root() / "results"
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the results markers {START!r} ... {END!r}.")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    new = head + readme_block(results) + tail
    if new != text:
        write_atomic(readme, new)
    return new != text
