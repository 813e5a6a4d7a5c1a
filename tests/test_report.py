"""The README's results table is the one the saved results give."""

import pandas as pd

from annlib.paths import project_root
from annlib.report import readme_block, results_table, update_readme


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
