"""What every notebook sets up first: profile, study, data location and output folders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from annlib.data.files import data_dir as resolve_data_dir
from annlib.data.studies import default_study
from annlib.paths import figures_dir, models_dir, results_dir
from annlib.profiles import Profile, get_profile


@dataclass(frozen=True)
class Session:
    """A notebook's settings and the folders its results and figures go to."""

    profile: Profile
    study: str
    data_dir: Path
    results: Path
    figures: Path
    output_dir: Path | None

    def figure(self, name: str) -> Path:
        """Return the stable path of a figure: figures/<study>/<name>.png."""
        return self.figures / f"{name}.png"

    def result(self, name: str) -> Path:
        """Return the path of a saved result: results/<study>/<name>."""
        return self.results / name

    def model_folder(self, name: str) -> Path:
        """Return the folder an exported model goes to: models/<name>/ (by profile)."""
        return models_dir(self.profile.name, self.output_dir) / name


def open_session(
    profile: str = "cpu",
    study: str | None = None,
    data_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
) -> Session:
    """Resolve a notebook's parameters into a Session (choosing the study if none is given)."""
    logging.basicConfig(level=logging.WARNING)
    prof = get_profile(profile)
    root = resolve_data_dir(data_dir)
    name = study or default_study(root)
    results = results_dir(profile, output_dir) / name
    figures = figures_dir(profile, output_dir) / name
    results.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    out = Path(output_dir) if output_dir is not None else None
    return Session(prof, name, root, results, figures, out)
