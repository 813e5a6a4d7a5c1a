"""Where the project keeps its outputs, per profile."""

from __future__ import annotations

from pathlib import Path

COMMITTED_PROFILE = "cpu"


def project_root() -> Path:
    """Return the repository root (the folder holding the annlib package)."""
    return Path(__file__).resolve().parent.parent


def output_root(profile: str, output_dir: str | Path | None = None) -> Path:
    """Return the folder that receives a profile's results/, figures/ and checkpoints/.

    Only the committed profile writes into the repository itself; every other profile writes under
    runs/<profile>/ so that a quick run never overwrites the committed outputs.
    """
    if output_dir is not None:
        return Path(output_dir)
    if profile == COMMITTED_PROFILE:
        return project_root()
    return project_root() / "runs" / profile


def results_dir(profile: str, output_dir: str | Path | None = None) -> Path:
    """Return (and create) the folder for saved metrics and histories."""
    path = output_root(profile, output_dir) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(profile: str, output_dir: str | Path | None = None) -> Path:
    """Return (and create) the folder for saved figures."""
    path = output_root(profile, output_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir(profile: str, output_dir: str | Path | None = None) -> Path:
    """Return the folder exported models go to: models/ for the committed profile."""
    return output_root(profile, output_dir) / "models"


def checkpoints_dir(profile: str, output_dir: str | Path | None = None) -> Path:
    """Return (and create) the folder for training checkpoints, which stay out of git."""
    root = output_root(profile, output_dir)
    path = root / "checkpoints" if root != project_root() else root / "checkpoints" / profile
    path.mkdir(parents=True, exist_ok=True)
    return path
