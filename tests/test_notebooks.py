"""The numbered notebooks run end to end in the smoke profile on the real EMNIST files."""

import json

import pandas as pd
import pytest

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
    } <= figures
    results = tmp_path / "results" / "bymerge-small"
    assert (results / "baselines.csv").read_text().count("\n") == 3  # header, lenet5, resnet50
    candidates = pd.read_csv(results / "candidates.csv")
    assert set(CANDIDATES) | set(BASELINES) == set(candidates.model)
    assert candidates.on_front.any()
    choice = load_selection(results)
    assert choice["chosen"] in CANDIDATES
    assert choice["chosen"] in choice["eligible"]
