"""Train again the comparison models of notebook 05 whose checkpoints are not in this checkout.

Notebook 05 scores LeNet-5, ResNet-50 and notebook 03's front-runners (seed 0) on the test set.
Checkpoints stay out of git, so for each of them whose own checkpoint is gone this script trains
a copy with the saved run's recipe and seed, in the study's training precision (notebook 02's
decision, as every run of the study), under the tag `<run>-retest`, and exports
it (float16 weights) to models/comparison/<run>-retest/, where the notebook looks. Models whose
checkpoint or exported copy is already there are skipped.

    python tools/retrain_comparison.py --data-dir ../shared/data/emnist --weights ../shared/weights
"""

from __future__ import annotations

import argparse
import logging

import torch

from annlib.comparison import comparison_model, comparison_runs, retest_tag
from annlib.data import build_study
from annlib.experiments import history_path, run_name, study_precision, train_model
from annlib.export import save_model
from annlib.optimize import load_trained, model_options
from annlib.pretrained import architecture
from annlib.records import load_json
from annlib.selection import load_selection
from annlib.session import Session, open_session

log = logging.getLogger("retrain_comparison")


def finished_without_weights(s: Session, run: str, num_classes: int) -> bool:
    """Return True if a run's history is saved as complete but its checkpoint is gone."""
    path = history_path(s.study, s.profile.name, run, s.output_dir)
    if not path.is_file() or not load_json(path).get("complete"):
        return False
    try:
        load_trained(load_json(path), num_classes, s.output_dir)
    except FileNotFoundError:
        return True
    return False


def main() -> None:
    """Retrain and export every comparison model that notebook 05 could not load."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="the profile of the saved runs")
    parser.add_argument("--study", default=None, help="default: as the notebooks choose")
    parser.add_argument("--data-dir", default=None, help="the EMNIST files")
    parser.add_argument("--weights", default=None, help="ImageNet MobileNetV2 weights (file/dir)")
    parser.add_argument("--output-dir", default=None, help="the profile's output folder")
    parser.add_argument("--models", nargs="*", help="only these models (default: all of them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    s = open_session(args.profile, args.study, args.data_dir, args.output_dir)
    study = build_study(s.study, s.data_dir)
    selection = load_selection(s.results)
    runs = dict(comparison_runs(selection["front_runners"]))
    unknown = sorted(set(args.models or ()) - set(runs))
    if unknown:
        parser.error(f"--models {' '.join(unknown)}: notebook 05 compares only {', '.join(runs)}")
    for model in args.models or runs:
        run = run_name(model, runs[model])
        tag = retest_tag(runs[model])
        history = load_json(history_path(s.study, s.profile.name, run, s.output_dir))
        folder = s.model_folder("comparison") / run_name(model, tag)
        net, source = comparison_model(history, folder, len(study.classes), s.output_dir)
        if net is not None:
            log.info("%s: notebook 05 can load it (%s), nothing to train", run, source["weights"])
            continue

        arch = {k: v for k, v in (history.get("model_options") or {}).items() if k != "weights"}
        options = model_options(model, arch, args.weights)
        config = history["config"] | {"precision": study_precision(s.results)}
        trained = train_model(
            model,
            study,
            s.profile.name,
            tag,
            retrain=finished_without_weights(s, run_name(model, tag), len(study.classes)),
            output_dir=s.output_dir,
            model_options=options or None,
            **config,
        )
        net, _ = load_trained(trained, len(study.classes), s.output_dir)
        save_model(
            net,
            architecture(model),
            study.classes,
            folder,
            weights_dtype=torch.float16,
            validation_accuracy=trained["best_val_accuracy"],
            run=trained["run"],
        )
        log.info(
            "%s: validation accuracy %.4f (the original run: %.4f), exported to %s",
            trained["run"],
            trained["best_val_accuracy"],
            history["best_val_accuracy"],
            folder,
        )


if __name__ == "__main__":
    main()
