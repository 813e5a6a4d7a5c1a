"""Command line: python -m annlib run | train | tune | predict | report | check-data.

`train` also runs under torchrun (torchrun --nproc_per_node=N -m annlib train MODEL ...): it then
joins the process group torchrun describes and trains data-parallel; only rank 0 logs and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys

from annlib.data.studies import STUDIES
from annlib.profiles import PROFILES


def add_common(parser: argparse.ArgumentParser) -> None:
    """Add the options every command shares: profile, study, data location."""
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--study", default=None, choices=sorted(STUDIES), help="default: auto")
    parser.add_argument(
        "--data-dir", default=None, help="EMNIST folder (default: $ANNLIB_DATA, else data/)"
    )
    parser.add_argument("--output-dir", default=None, help="where results go (default: by profile)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the annlib command."""
    parser = argparse.ArgumentParser(prog="python -m annlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks in order")
    add_common(run)
    run.add_argument("--only", nargs="*", help="notebook numbers, e.g. 01 02")
    run.add_argument("--retrain", action="store_true", help="ignore saved training results")
    run.add_argument(
        "--weights",
        default=None,
        help="pretrained weights file or folder (default: $ANNLIB_WEIGHTS, else weights/)",
    )

    train = sub.add_parser("train", help="train one registry model (cached like the notebooks)")
    add_common(train)
    train.add_argument("model")
    train.add_argument("--tag", default="")
    train.add_argument("--retrain", action="store_true")
    train.add_argument("--epochs", type=int)
    train.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--batch-size", type=int, help="global batch, split evenly over torchrun's processes"
    )
    train.add_argument("--lr", type=float, help="peak learning rate for the global batch")

    tune = sub.add_parser(
        "tune", help="Optuna search for the chosen model (workers may share one study)"
    )
    add_common(tune)
    from annlib.tuning import add_tune_arguments  # imports optuna and torch: only when built

    add_tune_arguments(tune)

    predict = sub.add_parser(
        "predict", help="classify image files of single handwritten characters"
    )
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--model", help="exported model folder (default: the one in models/)")
    predict.add_argument(
        "--backend",
        choices=["torch", "onnx", "onnx-int8"],
        help="how to run it (default: the model's deployment form)",
    )
    predict.add_argument("--top-k", type=int, default=3, help="characters shown per image")
    polarity = predict.add_mutually_exclusive_group()
    polarity.add_argument("--dark-on-light", action="store_true", help="ink darker than paper")
    polarity.add_argument("--light-on-dark", action="store_true", help="ink lighter than paper")

    report = sub.add_parser("report", help="typeset report.pdf from the saved results")
    report.add_argument(
        "--results", help="a study's results folder (default: results/<study> with saved results)"
    )
    report.add_argument("--figures", help="its figures (default: figures/<study> beside results/)")
    report.add_argument(
        "--output", help="the PDF to write (default: report.pdf beside results/ and figures/)"
    )

    check = sub.add_parser("check-data", help="list the official files found and verify them")
    check.add_argument("--data-dir", default=None)
    return parser


QUIET_LOGGERS = ("onnxscript", "onnx_ir")


def main(argv: list[str] | None = None) -> int:
    """Run the annlib command line."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for chatty in QUIET_LOGGERS:  # the ONNX exporter logs every graph pass at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)

    if args.command == "check-data":
        from annlib.data import check_files

        checks = check_files(args.data_dir)
        for check in checks:
            print(f"{check.name:45s} {check.status}")
        corrupt = [c.name for c in checks if c.status.startswith("CORRUPT")]
        if corrupt:
            print(f"{len(corrupt)} corrupt file(s): delete them and fetch them again.")
        return 1 if corrupt else 0

    if args.command == "run":
        from annlib.pipeline import run_notebooks

        for path in run_notebooks(
            args.profile,
            args.study,
            args.data_dir,
            args.only,
            args.retrain,
            args.output_dir,
            args.weights,
        ):
            print(f"executed {path}")
        return 0

    if args.command == "predict":
        return predict(args)

    if args.command == "report":
        from annlib.pdfreport import ReportError, build_report

        try:
            print(f"wrote {build_report(args.results, args.figures, args.output)}")
        except ReportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0

    if args.command == "tune":
        from annlib.tuning import summary_line, tune_from_args

        print(summary_line(tune_from_args(args)))
        return 0

    from annlib import distributed

    distributed.init_from_env()
    main_rank = distributed.is_main()
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        history = train(args)
    finally:
        distributed.shutdown()
    if main_rank:
        print(
            f"{history['run']}: best validation accuracy {history['best_val_accuracy']:.4f} "
            f"at epoch {history['best_epoch']}, {history['train_seconds']:.0f} s of training"
        )
    return 0


def predict(args: argparse.Namespace) -> int:
    """Classify image files with an exported model; print the top characters of each."""
    from annlib.export import ModelFolderError, deployed_backend, find_model_folder, load_model
    from annlib.images import ImageError, load_for_model

    invert = True if args.dark_on_light else False if args.light_on_dark else None
    try:
        folder = args.model or find_model_folder()
        model = load_model(folder, args.backend or deployed_backend(folder))
        images = load_for_model(args.images, invert=invert)
    except (ImageError, ModelFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = model.predict(images, orientation="upright", top_k=args.top_k)
    for path, chars, probs in zip(
        args.images, result.top_characters, result.top_probabilities, strict=True
    ):
        ranked = "  ".join(f"{c} {p:.3f}" for c, p in zip(chars, probs, strict=True))
        print(f"{path}: {chars[0]}   ({ranked})")
    return 0


def train(args: argparse.Namespace) -> dict:
    """Build the study and train (or read back) the model the train command names."""
    from annlib.data import build_study
    from annlib.experiments import train_model

    study = build_study(args.study, args.data_dir)
    options = ("epochs", "precision", "seed", "batch_size", "lr")
    overrides = {k: getattr(args, k) for k in options}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return train_model(
        args.model, study, args.profile, args.tag, args.retrain, args.output_dir, **overrides
    )


if __name__ == "__main__":
    sys.exit(main())
