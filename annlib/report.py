"""The README's results table, built from the saved results and never typed by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from annlib.paths import project_root
from annlib.records import write_atomic

START = "<!-- results:start (written by python -m annlib run; do not edit) -->"
END = "<!-- results:end -->"


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


def readme_block(results: Path) -> str:
    """Return the README's generated block: markers around the results table."""
    return f"{START}\n{results_table(results)}\n{END}"


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
