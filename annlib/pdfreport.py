"""report.pdf: the saved results of a study typeset by Typst from report/report.typ.

The template reads every number from the results' CSV and JSON files itself; this module only
finds the files, checks that the required ones exist, tells the template which optional ones are
missing (their sections then say "not yet evaluated") and writes the PDF atomically.

test_summary.json is what annlib.testeval.summarize returns, optionally with "model", "form"
(the inference form evaluated) and "mnist": a dict with n, accuracy, accuracy_low,
accuracy_high and removed_seen for the EMNIST-MNIST test file scored on the digit classes.
test_per_class.csv and test_confused_pairs.csv are testeval's per_class_table and
confused_pairs; 05_confusion.png and 05_misclassified.png the plots of the same names.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from annlib.data.studies import STUDIES
from annlib.paths import project_root
from annlib.records import atomic_path

log = logging.getLogger(__name__)

TEMPLATE = project_root() / "report" / "report.typ"


class ReportError(RuntimeError):
    """The report cannot be built: a required result is missing or the template fails."""


@dataclass(frozen=True)
class Source:
    """One file the template reads: its key there, folder (results or figures), name, writer."""

    key: str
    folder: str
    name: str
    writer: str
    required: bool = False


SOURCES = (
    Source("data_summary", "results", "data_summary.json", "01_data_analysis", True),
    Source("class_counts", "results", "class_counts.csv", "01_data_analysis", True),
    Source("class_distribution", "figures", "01_class_distribution.png", "01_data_analysis"),
    Source("lookalikes", "results", "lookalike_pairs.csv", "01_data_analysis"),
    Source("baselines", "results", "baselines.csv", "02_baselines", True),
    Source("precision_decision", "results", "precision_decision.json", "02_baselines"),
    Source("baseline_curves", "figures", "02_learning_curves.png", "02_baselines"),
    Source("candidates", "results", "candidates.csv", "03_model_selection", True),
    Source("selection", "results", "selection.json", "03_model_selection", True),
    Source("pareto", "figures", "03_pareto.png", "03_model_selection", True),
    Source("tuning_trials", "results", "tuning_trials.csv", "04_optimization"),
    Source("tuning_history", "figures", "04_tuning_history.png", "04_optimization"),
    Source("tuning_importance", "figures", "04_tuning_importance.png", "04_optimization"),
    Source("tuning_front", "figures", "04_tuning_front.png", "04_optimization"),
    Source("final_curves", "figures", "04_final_learning_curves.png", "04_optimization"),
    Source("inference_forms", "results", "inference_forms.csv", "04_optimization"),
    Source("deployment", "results", "deployment.json", "04_optimization"),
    Source("inference_fig", "figures", "04_inference_forms.png", "04_optimization"),
    Source("test_summary", "results", "test_summary.json", "05_test_evaluation"),
    Source("test_comparison", "results", "test_comparison.csv", "05_test_evaluation"),
    Source("test_published", "results", "test_published.csv", "05_test_evaluation"),
    Source("test_per_class", "results", "test_per_class.csv", "05_test_evaluation"),
    Source("test_confused", "results", "test_confused_pairs.csv", "05_test_evaluation"),
    Source("test_confusion", "figures", "05_confusion.png", "05_test_evaluation"),
    Source("test_gallery", "figures", "05_misclassified.png", "05_test_evaluation"),
    Source("test_tradeoff", "figures", "05_tradeoff.png", "05_test_evaluation"),
    Source("final_curves_wide", "figures", "05_final_learning_curves.png", "05_test_evaluation"),
)


def default_results(root: str | Path | None = None) -> Path:
    """Return results/<study> of the first study (balanced first) that has saved results."""
    results = Path(root or project_root()) / "results"
    for study in STUDIES:
        if (results / study / "data_summary.json").is_file():
            return results / study
    raise ReportError(
        f"No study has saved results under {results}: run the notebooks first "
        "(python -m annlib run), or pass --results to a study's results folder."
    )


def figures_beside(results: Path) -> Path:
    """Return the figures folder that belongs to a results folder: <root>/figures/<study>."""
    return results.parent.parent / "figures" / results.name


def shown(path: Path) -> str:
    """Return a path relative to the project when it lies inside it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(project_root()))
    except ValueError:
        return str(path)


def find_sources(results: Path, figures: Path) -> dict[str, Path | None]:
    """Return each source's path, None for a missing optional one; raise if a required one lacks."""
    folders = {"results": results, "figures": figures}
    found = {s.key: folders[s.folder] / s.name for s in SOURCES}
    found = {key: path if path.is_file() else None for key, path in found.items()}
    missing = [s for s in SOURCES if s.required and found[s.key] is None]
    if missing:
        listed = "; ".join(
            f"{shown(folders[s.folder] / s.name)} (from {s.writer})" for s in missing
        )
        raise ReportError(
            f"Required results are missing: {listed}. Run those notebooks first "
            "(python -m annlib run --only NN), or point --results and --figures at the folders "
            "that hold them."
        )
    return found


def template_inputs(
    results: Path, figures: Path, found: dict[str, Path | None], root: Path
) -> dict:
    """Return what the template is told: folders, and each file's path from the compile root."""
    folders = {"results": results, "figures": figures}
    return {
        "results": shown(results),
        "figures": shown(figures),
        "files": {
            k: None if p is None else "/" + p.relative_to(root).as_posix() for k, p in found.items()
        },
        "names": {s.key: shown(folders[s.folder] / s.name) for s in SOURCES},
    }


def compile_options(
    results: Path, figures: Path, template: Path = TEMPLATE
) -> dict[str, str | bool | dict[str, str]]:
    """Return the arguments typst needs besides the template: compile root, inputs, fonts.

    The root is the folder holding the template, results and figures, since Typst reads no
    file outside it; the template gets each file's path from there, None for a missing one.
    """
    found = find_sources(results, figures)
    root = Path(os.path.commonpath([template.parent, results, figures]))
    absent = [s.name for s in SOURCES if found[s.key] is None]
    if absent:
        log.info("not yet there (their sections say so): %s", ", ".join(absent))
    inputs = template_inputs(results, figures, found, root)
    return {
        "root": str(root),
        "sys_inputs": {"inputs": json.dumps(inputs)},
        "ignore_system_fonts": True,  # the fonts inside typst: the same PDF on every machine
    }


def pending_sections(
    results: str | Path, figures: str | Path, template: str | Path = TEMPLATE
) -> list[list[str]]:
    """Return, per section that says "not yet evaluated", the keys of the files it waits for."""
    import typst

    template = Path(template).resolve()
    options = compile_options(Path(results).resolve(), Path(figures).resolve(), template)
    return json.loads(typst.query(str(template), "<not-yet>", field="value", **options))


def build_report(
    results: str | Path | None = None,
    figures: str | Path | None = None,
    output: str | Path | None = None,
    template: str | Path = TEMPLATE,
) -> Path:
    """Compile the report PDF from a study's saved results and figures; return its path.

    Defaults: the first study with saved results, its figures beside them, and report.pdf in the
    folder that holds results/ and figures/.
    """
    import typst

    results = Path(results).resolve() if results else default_results()
    figures = Path(figures).resolve() if figures else figures_beside(results)
    output = Path(output) if output else results.parent.parent / "report.pdf"
    template = Path(template).resolve()
    if not template.is_file():
        raise ReportError(f"The report template {template} is missing: restore report/report.typ.")

    options = compile_options(results, figures, template)
    try:
        pdf, warnings = typst.compile_with_warnings(str(template), **options)
    except typst.TypstError as error:
        raise ReportError(f"Typst could not compile {template}: {error.message}") from error
    for warning in warnings:
        log.warning("typst: %s", warning.message)

    with atomic_path(output) as tmp:
        tmp.write_bytes(pdf)
    log.info("wrote %s (%d kB)", output, len(pdf) // 1024)
    return output
