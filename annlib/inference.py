"""Fast inference forms of a trained model (bf16, torch.compile, ONNX Runtime fp32 and int8), timed.

Every form is a callable from a float32 batch (N, 1, 28, 28) in [0, 1] to float32 logits (N, 47),
so one timing function and one accuracy function serve them all and the table compares like with
like. Batch-norm folding: the ONNX exporter (dynamo, with its optimizer on) already folds every
batch norm into the convolution before it, so the exported graph holds no BatchNormalization node;
for eager PyTorch the folding is done by torch.fx and measured as its own form.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
import torch.utils.benchmark as benchmark
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn
from torch.fx.experimental.optimization import fuse
from tqdm.auto import tqdm

from annlib.data.loader import prepare
from annlib.evaluate import autocast
from annlib.models import INPUT_SHAPE
from annlib.records import bf16_native
from annlib.timing import hardware

log = logging.getLogger(__name__)

BASELINE = "eager-fp32"
FORMS = (
    BASELINE,
    "eager-fp32-folded",
    "channels_last",
    "bf16",
    "torch.compile",
    "onnxruntime-fp32",
    "onnxruntime-int8",
)
INPUT_NAME, OUTPUT_NAME = "images", "logits"

Batch = torch.Tensor | np.ndarray


@dataclass
class Form:
    """One way of running a model: a callable from a float32 batch to logits, and what it is.

    A form that could not be built (torch.compile without a working compiler) keeps run=None
    and the error text, so a table can show why it is missing instead of the notebook crashing.
    """

    name: str
    description: str
    run: Callable[[torch.Tensor], torch.Tensor] | None = None
    runtime: str = "torch"
    threads: int = field(default_factory=torch.get_num_threads)
    onnx: bytes | None = field(default=None, repr=False)
    error: str | None = None

    @property
    def available(self) -> bool:
        """Return True if the form was built and can be called."""
        return self.run is not None

    def __call__(self, x: Batch) -> torch.Tensor:
        """Return float32 logits (N, classes) of a float32 batch (N, 1, 28, 28), numpy or torch."""
        if self.run is None:
            raise RuntimeError(f"Form {self.name!r} is not available: {self.error}")
        x = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        if x.dtype != torch.float32 or x.ndim != 4:
            raise ValueError(
                f"Forms take a float32 batch (N, 1, 28, 28); got {x.dtype} of shape "
                f"{tuple(x.shape)}. Use annlib.data.prepare on uint8 images first."
            )
        return self.run(x)


def eval_copy(model: nn.Module) -> nn.Module:
    """Return a CPU copy of the model in eval mode, leaving the caller's model untouched."""
    return copy.deepcopy(model).cpu().eval()


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Return an eval copy with each batch norm folded into its convolution (torch.fx).

    Models that torch.fx cannot trace come back unfolded, with a warning in the log.
    """
    model = eval_copy(model)
    try:
        return fuse(model)
    except Exception as error:  # fx raises many types for code it cannot trace
        log.warning("Batch norm not folded, torch.fx could not trace the model: %s", error)
        return model


def torch_form(
    name: str, description: str, model: nn.Module, bf16: bool = False, channels_last: bool = False
) -> Form:
    """Return a form running model under inference mode (optionally bf16 or channels_last)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(bf16):
            return model(x).float()

    return Form(name, description, run)


def bf16_form(model: nn.Module, emulated: bool = False) -> Form:
    """Return the bf16 autocast form; unavailable on a CPU without native bfloat16 unless emulated.

    Without AVX-512 BF16 or AMX, oneDNN has no bfloat16 convolutions and PyTorch falls back to
    slow generic kernels: on an AVX2 CPU a batch runs several to hundreds of times slower than
    in fp32, so timing it, and scoring it on a validation set, can take many minutes.
    """
    description = "PyTorch eager, CPU autocast to bfloat16"
    if not emulated and not bf16_native():
        error = (
            "This CPU has no native bfloat16 (AVX-512 BF16 or AMX); emulated bf16 is far slower "
            "than fp32 and was not timed (pass emulated_bf16=True to time it anyway)."
        )
        return Form("bf16", description, error=error)
    return torch_form("bf16", description, model, bf16=True)


def compiled_form(model: nn.Module) -> Form:
    """Return the torch.compile (inductor) form, or an unavailable form holding the error.

    Compilation is lazy, so the form is called here at batch 1 and 2: the first call compiles
    a graph for batch 1, the second one with a dynamic batch size that every larger batch reuses.
    """
    description = "torch.compile, default inductor backend, fp32"
    try:
        compiled = torch.compile(model)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return compiled(x)

        for n in (1, 2):
            run(torch.rand(n, *INPUT_SHAPE))
    except Exception as error:  # inductor fails in many ways without a working C++ toolchain
        text = f"{type(error).__name__}: {error}".strip()
        log.warning("torch.compile failed on this machine: %s", text.splitlines()[0])
        return Form("torch.compile", description, error=text)
    return Form("torch.compile", description, run)


def export_onnx(model: nn.Module, opset: int | None = None) -> bytes:
    """Return the model exported to ONNX (fp32, dynamic batch axis) as serialized bytes.

    torch.onnx's dynamo exporter runs its graph optimizer, which folds batch norms into the
    preceding convolutions and folds constants.
    """
    model = eval_copy(model)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (torch.rand(2, *INPUT_SHAPE),),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        verbose=False,
    )
    return program.model_proto.SerializeToString()


def onnx_ops(model_bytes: bytes) -> list[str]:
    """Return the operator types of an ONNX model's nodes, in graph order."""
    return [node.op_type for node in onnx.load_from_string(model_bytes).graph.node]


def ort_session(model_bytes: bytes, threads: int | None = None) -> ort.InferenceSession:
    """Return an ONNX Runtime CPU session with torch's thread count inside an operator."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def onnx_runner(model_bytes: bytes, threads: int | None = None) -> Callable:
    """Return a function from a float32 tensor batch to logits, run by ONNX Runtime."""
    session = ort_session(model_bytes, threads)
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        feed = {input_name: np.ascontiguousarray(x.detach().cpu().numpy())}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


def onnx_form(name: str, description: str, model_bytes: bytes, threads: int | None = None) -> Form:
    """Return a form running an ONNX model with ONNX Runtime (threads default: torch's)."""
    threads = threads or torch.get_num_threads()
    run = onnx_runner(model_bytes, threads)
    return Form(name, description, run, "onnxruntime", threads, model_bytes)


class CalibrationImages(CalibrationDataReader):
    """Feed uint8 upright images to ONNX Runtime's calibrator, prepared as in training."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 64) -> None:
        self.images = torch.from_numpy(check_images(images)).unsqueeze(1)
        self.input_name, self.batch_size = input_name, batch_size
        self.batches = self.iterate()

    def iterate(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield one input feed per batch of images."""
        for start in range(0, len(self.images), self.batch_size):
            x = prepare(self.images[start : start + self.batch_size])
            yield {self.input_name: x.numpy()}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next feed, or None when the images are used up."""
        return next(self.batches, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self.batches = self.iterate()


def quantize_int8(model_bytes: bytes, calibration: np.ndarray, batch_size: int = 64) -> bytes:
    """Return an ONNX model quantized to int8 (static, QDQ, per-channel weights) as bytes.

    quant_pre_process first infers shapes and runs ONNX Runtime's graph optimizations, as the
    quantization tool asks; activation ranges are then calibrated (min/max) on the images given.
    """
    with tempfile.TemporaryDirectory(prefix="annlib-int8-") as tmp:
        fp32, pre, int8 = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        fp32.write_bytes(model_bytes)
        quant_pre_process(fp32, pre)
        reader = CalibrationImages(calibration, INPUT_NAME, batch_size)
        quantize_static(
            pre,
            int8,
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return int8.read_bytes()


def build_forms(
    model: nn.Module,
    calibration: np.ndarray,
    names: Iterable[str] = FORMS,
    emulated_bf16: bool = False,
) -> dict[str, Form]:
    """Return the named inference forms of a trained model, in the order of names.

    calibration holds uint8 upright images (N, 28, 28) for the int8 form's activation ranges;
    a few hundred images from the training set are enough. emulated_bf16: build the bf16 form
    even on a CPU without native bfloat16 (see bf16_form).
    """
    names = list(names)
    unknown = sorted(set(names) - set(FORMS))
    if unknown:
        raise ValueError(f"Unknown forms {unknown}: choose from {', '.join(FORMS)}.")
    model = eval_copy(model)
    fp32 = export_onnx(model) if {"onnxruntime-fp32", "onnxruntime-int8"} & set(names) else b""

    builders: dict[str, Callable[[], Form]] = {
        BASELINE: lambda: torch_form(BASELINE, "PyTorch eager, eval mode, fp32", model),
        "eager-fp32-folded": lambda: torch_form(
            "eager-fp32-folded",
            "PyTorch eager, fp32, batch norms folded into convolutions (torch.fx)",
            fold_batch_norm(model),
        ),
        "channels_last": lambda: torch_form(
            "channels_last",
            "PyTorch eager, fp32, channels_last memory format",
            eval_copy(model),
            channels_last=True,
        ),
        "bf16": lambda: bf16_form(model, emulated_bf16),
        "torch.compile": lambda: compiled_form(eval_copy(model)),
        "onnxruntime-fp32": lambda: onnx_form(
            "onnxruntime-fp32", "ONNX Runtime CPU, fp32 (exported with torch.onnx, dynamo)", fp32
        ),
        "onnxruntime-int8": lambda: onnx_form(
            "onnxruntime-int8",
            "ONNX Runtime CPU, int8 static quantization (QDQ, per-channel weights, min/max)",
            quantize_int8(fp32, calibration),
        ),
    }
    forms = {}
    for name in tqdm(names, desc="building forms", leave=False):
        forms[name] = builders[name]()
        log.info("Built form %s%s", name, "" if forms[name].available else " (unavailable)")
    return forms


def check_images(X: np.ndarray) -> np.ndarray:
    """Return X if it is a uint8 array of images (N, 28, 28); raise ValueError otherwise."""
    X = np.asarray(X)
    if X.dtype != np.uint8 or X.ndim != 3 or X.shape[1:] != INPUT_SHAPE[1:]:
        raise ValueError(
            f"Expected uint8 images of shape (N, 28, 28), got {X.dtype} of shape {X.shape}."
        )
    return X


def form_predictions(form: Form, X: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Return the class a form predicts for each uint8 upright image (N, 28, 28)."""
    images = torch.from_numpy(np.ascontiguousarray(check_images(X))).unsqueeze(1)
    chunks = [
        form(prepare(images[start : start + batch_size])).argmax(1)
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks).numpy()


def form_accuracy(form: Form, X: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> float:
    """Return a form's accuracy on labelled uint8 upright images."""
    return float(np.mean(form_predictions(form, X, batch_size) == np.asarray(y)))


def time_form(form: Form, batch_size: int, min_run_time: float = 1.0, warmup: int = 3) -> dict:
    """Return one timing row of a form at one batch size: median and IQR per batch.

    As in annlib.timing.measure_inference: warm-up calls, then torch.utils.benchmark repeats the
    call in blocks until min_run_time has passed. torch runs with the form's thread count, the
    one its ONNX Runtime session was built with, so every form gets the same cores.
    """
    x = torch.rand(batch_size, *INPUT_SHAPE)
    for _ in range(warmup):
        form(x)
    timer = benchmark.Timer(
        stmt="form(x)", globals={"form": form, "x": x}, num_threads=form.threads
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {
        "form": form.name,
        "batch": batch_size,
        "threads": form.threads,
        "ms_per_batch": m.median * 1e3,
        "iqr_ms": m.iqr * 1e3,
        "runs": len(m.times) * m.number_per_run,
        "images_per_s": batch_size / m.median,
        "runtime": form.runtime,
        "hardware": hardware(),
    }


def onnx_speeds(
    forms: dict[str, Form], large_batch: int, rounds: int = 5, min_run_time: float = 0.5
) -> dict[str, dict[str, float]]:
    """Return each form's ms per image at batch 1 and images/s at large_batch.

    The forms are timed in turn, round after round, and each value is the median over rounds:
    a slow spell of a shared machine then falls on every model instead of on one.
    """
    if not forms or rounds < 1:
        raise ValueError(f"Pass at least one model and one round (got {len(forms)}, {rounds}).")
    latency: dict[str, list[float]] = {name: [] for name in forms}
    throughput: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(rounds):
        for name, form in forms.items():
            latency[name].append(time_form(form, 1, min_run_time)["ms_per_batch"])
            throughput[name].append(time_form(form, large_batch, min_run_time)["images_per_s"])
    return {
        name: {
            "onnx_latency_ms": float(np.median(latency[name])),
            "onnx_images_per_s": float(np.median(throughput[name])),
        }
        for name in forms
    }


def with_threads(form: Form, threads: int) -> Form:
    """Return the form set to run on a number of threads (an ONNX form gets a new session)."""
    if form.runtime == "onnxruntime" and form.onnx is not None:
        return onnx_form(form.name, form.description, form.onnx, threads)
    return replace(form, threads=threads)


def thread_sweep(
    form: Form, batches: Sequence[int], threads: Sequence[int], min_run_time: float = 1.0
) -> pd.DataFrame:
    """Return time_form's rows for a form at every thread count and batch size."""
    rows = [
        time_form(with_threads(form, n), batch, min_run_time) for n in threads for batch in batches
    ]
    return pd.DataFrame(rows)


def compare_forms(
    forms: dict[str, Form],
    X: np.ndarray,
    y: np.ndarray,
    batches: Sequence[int] = (1, 512),
    min_run_time: float = 1.0,
    baseline: str = BASELINE,
) -> pd.DataFrame:
    """Return the comparison table: per form and batch, time, throughput, speed-up and accuracy.

    Speed-up is against the baseline form at the same batch; accuracy (on X, y, normally the
    validation set) and its difference from the baseline's in percentage points, and agreement:
    the share of images on which the form predicts the baseline's class. Unavailable forms get a
    row with their error and no numbers.
    """
    if baseline not in forms or not forms[baseline].available:
        raise ValueError(f"The baseline form {baseline!r} must be among the forms and available.")
    reference = form_predictions(forms[baseline], X)
    y = np.asarray(y)

    rows = []
    for name, form in tqdm(forms.items(), desc="timing forms", leave=False):
        if not form.available:
            rows += [{"form": name, "batch": b, "error": form.error} for b in batches]
            continue
        predicted = reference if name == baseline else form_predictions(form, X)
        scores = {
            "accuracy": float(np.mean(predicted == y)),
            "agreement": float(np.mean(predicted == reference)),
        }
        for b in batches:
            rows.append({**time_form(form, b, min_run_time), **scores, "error": None})
        log.info("Timed form %s", name)

    table = pd.DataFrame(rows)
    table["description"] = table.form.map({name: f.description for name, f in forms.items()})
    base = table[table.form == baseline].set_index("batch")
    table["speedup"] = table.images_per_s / table.batch.map(base.images_per_s)
    table["accuracy_diff_points"] = 100 * (table.accuracy - base.accuracy.iloc[0])
    columns = ["form", "batch", "ms_per_batch", "iqr_ms", "images_per_s", "speedup", "accuracy"]
    columns += ["accuracy_diff_points", "agreement", "threads", "runs", "runtime", "hardware"]
    return table[columns + ["description", "error"]]


@dataclass(frozen=True)
class DeploymentRule:
    """The form to deploy: fastest at the large batch among those that keep accuracy.

    A form qualifies if its validation accuracy is at most max_loss_points below the baseline's.
    Qualifying forms whose large-batch throughput is within throughput_tolerance (a fraction)
    of the best count as tied, and the tie goes to the lowest batch-1 latency.
    """

    max_loss_points: float = 0.2
    throughput_tolerance: float = 0.05
    baseline: str = BASELINE

    def apply(self, table: pd.DataFrame) -> dict:
        """Return the chosen form and the numbers behind the choice."""
        large, small = table.batch.max(), table.batch.min()
        at_large = table[(table.batch == large) & table.images_per_s.notna()].set_index("form")
        at_small = table[(table.batch == small) & table.ms_per_batch.notna()].set_index("form")
        qualifies = at_large.accuracy_diff_points >= -self.max_loss_points
        candidates = at_large[qualifies]
        if candidates.empty:
            raise ValueError("No form qualifies; the baseline itself is missing from the table.")

        best = candidates.images_per_s.max()
        tied = candidates[candidates.images_per_s >= (1 - self.throughput_tolerance) * best]
        choice = at_small.loc[tied.index].ms_per_batch.idxmin()
        row = at_large.loc[choice]
        return {
            "form": choice,
            "rule": (
                f"highest throughput at batch {large} among forms losing at most "
                f"{self.max_loss_points} points of accuracy against {self.baseline}; forms "
                f"within {self.throughput_tolerance:.0%} of the best are tied and the lowest "
                f"batch-{small} latency wins"
            ),
            "large_batch": int(large),
            "images_per_s": float(row.images_per_s),
            "speedup": float(row.speedup),
            "latency_batch": int(small),
            "latency_ms": float(at_small.loc[choice].ms_per_batch),
            "accuracy": float(row.accuracy),
            "accuracy_diff_points": float(row.accuracy_diff_points),
            "tied": list(tied.index),
            "rejected_for_accuracy": list(at_large.index[~qualifies]),
            "unavailable": sorted(set(table.form) - set(at_large.index)),
        }
