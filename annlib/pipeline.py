"""Executing the numbered notebooks in order with papermill, for one study and profile."""

from __future__ import annotations

import logging
from pathlib import Path

from annlib.paths import COMMITTED_PROFILE, output_root, project_root
from annlib.records import atomic_path
from annlib.report import update_readme

log = logging.getLogger(__name__)


def notebooks(only: list[str] | None = None) -> list[Path]:
    """Return the numbered notebooks in order, or those whose number is in only."""
    found = sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [nb for nb in found if nb.name[:2] in only]
    if not found:
        have = sorted(nb.name[:2] for nb in (project_root() / "notebooks").glob("[0-9][0-9]_*"))
        raise FileNotFoundError(f"No notebook numbered {only}: the numbers are {', '.join(have)}.")
    return found


def executed_path(notebook: Path, profile: str, output_dir: str | Path | None) -> Path:
    """Return where an executed notebook is written: in place for the committed profile only."""
    if profile == COMMITTED_PROFILE and output_dir is None:
        return notebook
    return output_root(profile, output_dir) / "notebooks" / notebook.name


def run_notebooks(
    profile: str,
    study: str | None = None,
    data_dir: str | None = None,
    only: list[str] | None = None,
    retrain: bool = False,
    output_dir: str | Path | None = None,
    weights: str | None = None,
) -> list[Path]:
    """Execute the notebooks in order with the given parameters; return the executed files.

    Each is written to a temporary name and renamed, so a failed run leaves the previous
    executed notebook as it was.
    """
    import papermill

    params = {
        "profile": profile,
        "study": study,
        "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
        "retrain": retrain,
        "output_dir": str(Path(output_dir).resolve()) if output_dir else None,
        "weights": str(Path(weights).resolve()) if weights else None,
    }
    written = []
    for nb in notebooks(only):
        target = executed_path(nb, profile, output_dir)
        log.info("executing %s -> %s", nb.name, target)
        with atomic_path(target) as tmp:
            papermill.execute_notebook(
                str(nb), str(tmp), parameters=params, cwd=str(nb.parent), progress_bar=False
            )
        written.append(target)
    if profile == COMMITTED_PROFILE and output_dir is None:
        update_readme()
    return written
