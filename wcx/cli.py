"""The ``wcx`` command line: a thin layer over the library.

Each command parses its options, makes one call into the library and renders the result.
Results go to stdout (and to ``--json PATH``); logs and progress bars go to stderr. One error
boundary (``main``) turns a ``WcxError`` into a one-line red message and the exit code of
method.md section 7 (0 ok, 1 the work failed, 2 bad input); an ``OSError`` the library did not
expect becomes one line too (exit 2 for a bad path, 1 for a failed write). ``--debug`` or
``WCX_DEBUG=1`` shows the traceback instead, and the full logs of the tools wcx drives (torch's
exporter). Warnings are shown once each, as one line; nothing on stderr carries terminal colour
codes unless stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wcx.errors import BadInputError, WcxError
from wcx.version import __version__

#: library parameter names -> the options that set them. The library's messages name its
#: parameters; the command line shows its own options instead. Names with an underscore, and
#: ``name=True``, are replaced wherever they stand; single words only at the start of a message
#: or as ``name=value``. ``name=False`` becomes the ``--no-`` form of a boolean option.
_FLAGS = {
    "batch_size": "--batch-size", "opt_batch": "--opt-batch", "max_batch": "--max-batch",
    "workspace_mb": "--workspace-mb", "log_level": "--trt-log-level", "input_shape": "--input-shape",
    "calib_data": "--calib-data", "eval_data": "--eval-data", "holdout_fraction": "--holdout",
    "parity_samples": "--parity-samples", "fit_fraction": "--fit-fraction", "n_boot": "--n-boot",
    "names": "--names", "precision": "--precision", "opset": "--opset", "mean": "--mean", "std": "--std",
    "risk": "--risk", "delta": "--delta", "tpr": "--tpr", "eps": "--eps", "seed": "--seed",
    "threads": "--threads", "widths": "--widths", "budget": "--budget", "repeats": "--repeats",
    "warmup": "--warmup", "cost": "--cost", "overwrite": "--overwrite",
    "size": "--size", "input_range": "--input-range", "replace_certified": "--replace-certified",
    "int8_reduce_range": "--int8-reduce-range", "int8_calibration": "--int8-calibration",
    "max_calib_samples": "--int8-calib-samples", "int8_min_agreement": "--int8-min-agreement",
    "int8_float_layers": "--int8-float-layers",
    "resize": "--resize", "crop": "--crop", "interpolation": "--interpolation",
    "max_queue_delay_us": "--max-queue-delay-us", "input_dtype": "--input-dtype", "instances": "--instances",
    "members": "--members", "max_cost": "--max-cost", "max_stages": "--max-stages", "match": "--match",
    "selection": "--selection", "alpha": "--alpha", "combine": "--combine", "horizon": "--horizon",
}
#: errno values of an OSError that mean a bad path was given (exit 2); the others are a failed
#: write or read of a valid path (exit 1)
_BAD_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP,
                              errno.EEXIST, errno.EINVAL})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours from torch and the like)."""
    return _ANSI.sub("", text)


def cli_message(message: str) -> str:
    """A library message with its parameter names replaced by the command line's options."""
    for name, flag in _FLAGS.items():
        message = re.sub(rf"(?<![\w\-/.]){name}=True\b", flag, message)
        message = re.sub(rf"(?<![\w\-/.]){name}=False\b", "--no-" + flag[2:], message)
        message = re.sub(rf"(?<![\w\-/.]){name}=(?=\w)", flag + " ", message)
        if "_" in name:
            message = re.sub(rf"(?<![\w\-/.]){name}(?![\w\-])", flag, message)
    first = re.match(r"^([a-z]+)(?=[: ])", message)
    if first and first.group(1) in _FLAGS:
        message = _FLAGS[first.group(1)] + message[first.end():]
    return message


def _one_line(text: str) -> str:
    return " ".join(strip_ansi(text).split())


def _render_error(exc: WcxError) -> None:
    # The message is escaped: text like wcx[tensorrt] must not be read as rich markup.
    err.print(f"[red]error:[/red] {escape(cli_message(_one_line(str(exc))))}", markup=True, highlight=False,
              soft_wrap=True)


def os_error_exit(exc: OSError) -> tuple[str, int]:
    """One line and the exit code for an ``OSError``: 2 for a bad path, 1 for a failed write."""
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    where = " -> ".join(os.fsdecode(n) if isinstance(n, bytes) else str(n) for n in names)
    reason = exc.strerror or str(exc)
    return (f"{where}: {reason}" if where else reason), (2 if exc.errno in _BAD_PATH_ERRNOS else 1)


def _debugging() -> bool:
    return _DEBUG["on"] or os.environ.get("WCX_DEBUG") == "1"


def _error_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``WcxError`` (or an ``OSError``) raised by a command into a one-line message and its
    exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except WcxError as exc:
            if _debugging():
                raise
            _render_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if _debugging():
                raise
            message, code = os_error_exit(exc)
            err.print(f"[red]error:[/red] {escape(_one_line(message))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper


_SHOWN_WARNINGS: set[tuple[str, str]] = set()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Show a warning as one line on stderr, once per kind and text (not the source line)."""
    text = cli_message(_one_line(str(message)))
    key = (category.__name__, text)
    if key in _SHOWN_WARNINGS:
        return
    _SHOWN_WARNINGS.add(key)
    err.print(f"[yellow]warning:[/yellow] {escape(text)}", markup=True, highlight=False, soft_wrap=True)


class _PlainFormatter(logging.Formatter):
    """Log lines without terminal colour codes (stderr is not a terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


_CommandFn = TypeVar("_CommandFn", bound=Callable[..., Any])


class _WcxTyper(typer.Typer):
    """A Typer app whose every command runs inside the error boundary (also under CliRunner)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_CommandFn], _CommandFn]:
        register = super().command(*args, **kwargs)

        def decorator(fn: _CommandFn) -> _CommandFn:
            register(_error_boundary(fn))
            return fn

        return decorator


app = _WcxTyper(
    name="wcx",
    help=(
        "Deploy a deep ensemble as a window-based early-exit cascade: export members to ONNX "
        "(wcx export), calibrate thresholds and windows for a risk target (wcx calibrate), run "
        "and benchmark the cascade (wcx run, wcx bench)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()  # results
err = Console(stderr=True)  # messages, logs, progress

_DEBUG = {"on": False}


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"wcx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output on stderr (-v info, -vv debug).")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    _DEBUG["on"] = debug or os.environ.get("WCX_DEBUG") == "1"
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if _DEBUG["on"]:
        level = logging.DEBUG  # the full logs of the tools wcx drives (torch's exporter)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if sys.stderr.isatty() else _PlainFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


def write_json(path: Path, data: Any) -> None:
    """Write a command's JSON result atomically."""
    from wcx.atomic import write_json_atomic

    write_json_atomic(path, data)


def check_outputs(*paths: Path | None) -> None:
    """Refuse output paths that cannot be files (a directory, a path under a file) before a
    command does its work."""
    from wcx.atomic import check_output_file

    for path in paths:
        if path is not None:
            check_output_file(path)


def parse_int_list(text: str, *, option: str) -> list[int]:
    """Parse '1,32,256' into [1, 32, 256]; a bad value is a BadInputError naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise BadInputError(f"{option}: expected positive integers, got {text!r}")
    return values


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, shown only on a terminal; yields ``advance(done, total)``."""
    if not err.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), "{task.completed}/{task.total}",
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _registered(kind: str) -> str:
    """The registered names of ``kind`` (scores, tasks), plugins included, for help texts."""
    from wcx.core.scores import SCORE_REGISTRY
    from wcx.core.tasks import TASK_REGISTRY

    registry: Any = {"score": SCORE_REGISTRY, "task": TASK_REGISTRY}[kind]
    return ", ".join(registry.names())


def _backend_help(*, auto: bool) -> str:
    from wcx.runtime.backends import BACKEND_REGISTRY

    names = ", ".join(BACKEND_REGISTRY.names())
    if auto:
        return (f"Backend: auto or one of {names} (auto: the calibrated one if it can run here, else the best "
                "available).")
    return (f"Backend that produces the logits: one of {names}. Calibrate on the deployment backend: precision "
            "shifts scores.")


# Options shared by several commands, declared once.
PolicyBundleArg = Annotated[Path, typer.Argument(help="Bundle directory (holds wcx.json) with a policy.")]
BundleArg = Annotated[Path, typer.Argument(help="Bundle directory (holds wcx.json).")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads (default: all cores).")
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Refuse a backend/precision other than the calibrated one.")
]
BackendOpt = Annotated[str, typer.Option("--backend", help=_backend_help(auto=True))]


# ---------------------------------------------------------------------------------------------
# wcx inspect
# ---------------------------------------------------------------------------------------------
@app.command()
def inspect(
    bundle: BundleArg,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the manifest summary as JSON here.")
    ] = None,
) -> None:
    """Verify a bundle (every section, every file's hash, no links) and print its members, policy,
    calibration and one digest of the whole bundle to pin."""
    from wcx.bundle import Bundle

    check_outputs(json_out)
    b = Bundle.load(bundle)
    digest = b.digest()
    manifest = b.manifest
    table = Table(title=f"{b.path}  (schema {manifest.schema_version})")
    for col in ("stage", "name", "precision", "file", "input", "classes", "MACs", "sha256"):
        table.add_column(col)
    for i, m in enumerate(b.members, start=1):
        shape = "x".join(["N", *(str(d) for d in m.input.shape)])
        table.add_row(
            str(i), m.name, m.precision, m.file, f"{m.input.name} {shape} {m.input.dtype}",
            str(m.num_classes), f"{m.macs:,}", m.sha256[:12],
        )
    out.print(table)
    if b.policy is not None:
        out.print(f"policy: {json.dumps(b.policy.to_dict())}")
    calib = b.calibration
    if calib is not None:
        keys = ("backend", "precision", "risk", "delta", "certified", "risk_upper_bound", "coverage")
        values = calib.to_dict()
        out.print("calibration: " + ", ".join(f"{k}={values.get(k)}" for k in keys))
    out.print(f"digest: {digest}", highlight=False, soft_wrap=True)
    if json_out:
        write_json(json_out, {**manifest.to_dict(), "digest": digest})


# ---------------------------------------------------------------------------------------------
# wcx export  (owned by wcx.export)
# ---------------------------------------------------------------------------------------------
def _parse_float_list(text: str | None, *, option: str) -> list[float] | None:
    """Parse '0.485,0.456,0.406' into floats; a bad value is a BadInputError naming the option."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise BadInputError(f"{option}: expected comma-separated numbers, got {text!r}")
    return values


_EXPORT_HELP = (
    "Export ensemble members to ONNX (FP32, FP16 or INT8) and write a checked bundle.\n\n"
    "Every PyTorch member is exported with a dynamic batch dimension and checked against ONNX Runtime "
    "(max abs diff, top-1 agreement); FP16 and INT8 graphs are checked against the FP32 graph. A failed "
    "check exits with code 1 and writes nothing; bad input exits with code 2.\n\n"
    "FP16 is checked on ONNX Runtime's CPU provider, which computes FP16 convolutions in FP32: that "
    "check measures weight rounding, not FP16 arithmetic."
)


@app.command(help=_EXPORT_HELP)
def export(
    models: Annotated[
        list[str],
        typer.Argument(
            help=(
                "Members, stage 1 first: an .onnx file (used as it is; no torch needed), a "
                "TorchScript file (torch.jit.load), or package.module:callable, which IMPORTS AND "
                "RUNS THAT CODE (from the current directory or the environment) and must return a "
                "torch.nn.Module with its weights loaded; its weights are saved in the bundle "
                "(safetensors) so the torch backend can rebuild it."
            ),
            show_default=False,
        ),
    ],
    input_shape: Annotated[
        list[str], typer.Option("--input-shape", help="Input shape of one sample, C,H,W (e.g. 1,28,28); repeat it "
                                "once per MODEL for members at different resolutions (then give --resize or --crop).",
                                show_default=False)
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Bundle directory to create (written atomically).", show_default=False)
    ],
    precision: Annotated[
        str, typer.Option("--precision", help="fp32, fp16 (graph converted, inputs/outputs stay float32) or "
                          "int8 (symmetric Q/DQ, per-channel weights; needs --calib-data), for every member; "
                          "or one per model, comma-separated (fp32,int8: a pool may hold one model at two "
                          "precisions under two --names, for wcx plan).")
    ] = "fp32",
    calib_data: Annotated[
        Path | None, typer.Option("--calib-data", help=(
            ".npz with x (N,C,H,W; float32 in [0,1] or uint8) and optional y labels, an IDX images file or "
            "an image folder (at most 20,000 images of it, a seeded sample). Used by the parity checks; "
            "for int8 also the INT8 activation ranges, with --holdout of it held back for the agreement "
            "check unless --eval-data is given."), show_default=False)
    ] = None,
    eval_data: Annotated[
        Path | None, typer.Option("--eval-data", help=(
            "Data in the same formats for the checks; for int8 the agreement and accuracy are measured "
            "on it instead of on a held-back part of --calib-data."), show_default=False)
    ] = None,
    names: Annotated[
        str | None, typer.Option("--names", help="Comma-separated member names, one per MODEL "
                                 "(default: file stem or callable name).", show_default=False)
    ] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset for PyTorch exports.")] = 17,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Largest batch the deployment will use (recorded for "
                          "engine builds; also the chunk size of the checks, at most 64).")
    ] = 256,
    mean: Annotated[
        str | None, typer.Option("--mean", help="Per-channel mean subtracted after scaling to [0,1], "
                                 "one value or one per channel, recorded in the manifest (default: 0).",
                                 show_default=False)
    ] = None,
    std: Annotated[
        str | None, typer.Option("--std", help="Per-channel std divided by after the mean, one value or "
                                 "one per channel (default: 1).", show_default=False)
    ] = None,
    resize: Annotated[
        list[str] | None, typer.Option("--resize", help=(
            "Members take raw uint8 frames (images of any size) and resize them first: S (shorter side to S, "
            "aspect kept, as torchvision's Resize(S)) or H,W. Repeat once per MODEL for different values."),
            show_default=False)
    ] = None,
    crop: Annotated[
        list[str] | None, typer.Option("--crop", help=(
            "Center crop after the resize to the member's H,W: S or H,W (as torchvision's CenterCrop). Repeat "
            "once per MODEL for different values."), show_default=False)
    ] = None,
    interpolation: Annotated[
        str, typer.Option("--interpolation", help="Resampling filter of --resize (Pillow): nearest, bilinear, "
                          "bicubic, lanczos, box or hamming.")
    ] = "bilinear",
    input_range: Annotated[
        str | None, typer.Option("--input-range", help=(
            "LOW,HIGH: the data arrives already normalised, as float32 in [LOW, HIGH]; the members take it "
            "as it is (no scaling, no --mean/--std, uint8 refused). Without it inputs are float32 in [0, 1] "
            "or uint8. Inputs outside the range are refused either way."), show_default=False)
    ] = None,
    fp32_atol: Annotated[
        float, typer.Option("--fp32-atol", help=(
            "Refuse a member whose ONNX logits differ from PyTorch's by more than this times "
            "max(1, largest |logit|) (float32 error grows with the logits' size)."))
    ] = 1e-4,
    fp16_min_agreement: Annotated[
        float, typer.Option("--fp16-min-agreement", help="Refuse FP16 members whose top-1 agreement with "
                            "FP32 (on the data, else on random inputs) is below this.")
    ] = 0.99,
    int8_min_agreement: Annotated[
        float, typer.Option("--int8-min-agreement", help="Refuse INT8 members whose top-1 agreement with "
                            "FP32 on data not used for the INT8 ranges is below this.")
    ] = 0.98,
    holdout: Annotated[
        float, typer.Option("--holdout", help="int8 without --eval-data: fraction of --calib-data held back "
                            "(at random, --seed) for the agreement check.")
    ] = 0.2,
    int8_reduce_range: Annotated[
        bool, typer.Option("--int8-reduce-range/--no-int8-reduce-range", help=(
            "Keep INT8 weights in 7 bits ([-64, 64]) instead of 8: only for bundles that run on ONNX "
            "Runtime on x86 CPUs without VNNI (AVX2 only), whose INT8 kernels saturate with full-range "
            "weights. Elsewhere (VNNI CPUs, ARM, TensorRT) 7 bits only cost accuracy."))
    ] = False,
    int8_calibration: Annotated[
        str, typer.Option("--int8-calibration", help=(
            "How the INT8 activation ranges are chosen from --calib-data: minmax (largest value seen), "
            "percentile (99.999th percentile of |value|) or entropy (onnxruntime's KL-divergence method)."))
    ] = "minmax",
    int8_float_layers: Annotated[
        str, typer.Option("--int8-float-layers", help=(
            "Layers INT8 export keeps in float32 (weights and arithmetic): auto (every layer quantized "
            "unless top-1 agreement falls short, then the fewest layers in float that bring it up, by "
            "measurement on calibration rows the ranges and the check do not use), first (the graph input "
            "and the first layer), last (the layer that makes the logits), first,last, layer:K (the K-th "
            "weighted layer, 0-based), or none."))
    ] = "auto",
    int8_calib_samples: Annotated[
        int, typer.Option("--int8-calib-samples", help=(
            "Largest number of --calib-data inputs the INT8 activation ranges are collected on (a random "
            "sample, --seed); time grows with it."))
    ] = 1024,
    parity_samples: Annotated[
        int, typer.Option("--parity-samples", help="Seeded random inputs (uniform in [0,1], then "
                          "preprocessed) in every parity check, besides the data.")
    ] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random inputs and the hold-out split.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it is a wcx bundle (anything "
                                            "else there is refused and left untouched).")] = False,
    backend: Annotated[
        str, typer.Option("--backend", help=(
            "onnxruntime (default): the bundle of ONNX members. tensorrt: also build a TensorRT engine "
            "per member right after exporting (needs TensorRT and a GPU; same as 'wcx build-engines')."))
    ] = "onnxruntime",
    opt_batch: Annotated[
        int, typer.Option("--opt-batch", help="--backend tensorrt: batch size the engines are tuned for.")
    ] = 32,
    workspace_mb: Annotated[
        int | None, typer.Option("--workspace-mb", help="--backend tensorrt: TensorRT workspace limit (MiB).",
                                 show_default=False)
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the export report as JSON here.", show_default=False)
    ] = None,
) -> None:
    """Export ensemble members to ONNX and write a checked bundle (help: ``_EXPORT_HELP``)."""
    from wcx.export.exporter import Tolerances, export_bundle

    if backend not in ("onnxruntime", "tensorrt"):
        raise BadInputError(f"--backend: expected onnxruntime or tensorrt, got {backend!r}")
    if backend == "tensorrt":
        # Refuse before minutes of export work when the engines could not be built anyway.
        from wcx.export.engine_compat import cuda_gpu_facts, import_tensorrt, validate_batch_sizes

        import_tensorrt("wcx export --backend tensorrt")
        cuda_gpu_facts("wcx export --backend tensorrt")
        validate_batch_sizes(opt_batch, max_batch)
    check_outputs(json_out)
    shapes = [parse_int_list(v, option="--input-shape") for v in input_shape]
    name_list = None if names is None else [n.strip() for n in names.split(",")]
    tolerances = Tolerances(fp32_max_abs_diff=fp32_atol, fp16_min_agreement=fp16_min_agreement,
                            int8_min_agreement=int8_min_agreement)
    report = _run_export_with_progress(
        export_bundle, models, out_dir, input_shape=shapes[0] if len(shapes) == 1 else shapes, precision=precision,
        resize=_size_option(resize, option="--resize"), crop=_size_option(crop, option="--crop"),
        interpolation=interpolation,
        calib_data=calib_data, eval_data=eval_data, names=name_list, opset=opset, max_batch=max_batch,
        mean=_parse_float_list(mean, option="--mean"), std=_parse_float_list(std, option="--std"),
        input_range=_parse_float_list(input_range, option="--input-range"), tolerances=tolerances,
        holdout_fraction=holdout, parity_samples=parity_samples,
        int8_reduce_range=int8_reduce_range, int8_calibration=int8_calibration, int8_float_layers=int8_float_layers,
        max_calib_samples=int8_calib_samples, seed=seed, overwrite=overwrite,
    )
    _render_export(report)
    result = report.to_dict()
    if backend == "tensorrt":
        from wcx.bundle import Bundle
        from wcx.export.tensorrt_engine import build_engines

        result["engines"] = [r.to_dict() for r in build_engines(
            Bundle.load(out_dir), opt_batch=opt_batch, max_batch=max_batch, workspace_mb=workspace_mb)]
        out.print(f"built {len(result['engines'])} TensorRT engines into {out_dir}/engines")
    if json_out:
        write_json(json_out, result)


def _size_option(values: list[str] | None, *, option: str) -> Any:
    """``--resize``/``--crop``: S or H,W each; one value for every member, several one per member."""
    if not values:
        return None
    parsed: list[Any] = []
    for text in values:
        ints = parse_int_list(text, option=option)
        if len(ints) not in (1, 2):
            raise BadInputError(f"{option}: expected S or H,W, got {text!r}")
        parsed.append(ints[0] if len(ints) == 1 else tuple(ints))
    return parsed[0] if len(parsed) == 1 else parsed


def _run_export_with_progress(fn: Any, models: list[str], out_dir: Path, **kwargs: Any) -> Any:
    """Call ``fn`` with a rich progress bar over members on stderr (only on a terminal)."""
    if not err.is_terminal:
        return fn(models, out_dir, **kwargs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("exporting {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("", total=len(models))
        return fn(models, out_dir, progress=lambda done, name: bar.update(task, completed=done, description=name),
                  **kwargs)


def _render_export(report: Any) -> None:
    table = Table(title=f"{report.bundle}  ({report.precision}, {report.seconds:.1f} s)")
    for col in ("stage", "name", "MACs", "fp32 max|diff|", "check", "top-1 agree", "accuracy", "s"):
        table.add_column(col, overflow="fold")
    for i, m in enumerate(report.members, start=1):
        fp32 = m.checks.get("fp32", {})
        diff = fp32.get("max_abs_diff")
        check, agree, acc = "fp32", "-", "-"
        result = None
        if "int8" in m.checks:
            check, result = "int8", m.checks["int8"]["eval"]
        elif "fp16" in m.checks:
            c = m.checks["fp16"]
            check, result = "fp16", c[c["judged_on"]]
        elif fp32.get("data") and "top1_agreement" in fp32["data"]:
            result = fp32["data"]
        if result is not None:
            agree = f"{result['top1_agreement']:.2%} (n={result['n']})"
            if result.get("reference_accuracy") is not None:
                acc = f"{result['reference_accuracy']:.2%} -> {result['candidate_accuracy']:.2%}"
        table.add_row(str(i), m.name, f"{m.macs:,}", "-" if diff is None else f"{diff:.2e}",
                      check, agree, acc, f"{m.seconds:.1f}")
    out.print(table)
    for note in report.notes:
        out.print(f"note: {note}", soft_wrap=True, highlight=False, markup=False)


# ---------------------------------------------------------------------------------------------
# wcx calibrate  (owned by wcx.calibration)
# ---------------------------------------------------------------------------------------------
@app.command()
def calibrate(
    bundle: Annotated[
        Path | None, typer.Argument(help="Bundle to calibrate (omit with --logits).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Held-out data never used for training, with labels; the members run on it, "
                     "read in chunks: an .npz (x, y), an IDX images file (labels file beside it) or an image "
                     "folder (one sub-folder per class, sorted names = labels)."),
    ] = None,
    logits: Annotated[
        Path | None,
        typer.Option("--logits", help="Calibrate from cached logits instead: .npz with logits (M, N, K), "
                     "y (N,), optional macs (M,). Nothing is written into a bundle."),
    ] = None,
    risk: Annotated[float, typer.Option("--risk", help="Target selective risk in (0, 1) (task selective).")] = 0.05,
    delta: Annotated[
        float | None,
        typer.Option("--delta", help="Enable the finite-sample guarantee: P(risk <= target) >= 1 - delta "
                     "(Learn-then-Test). Without it the fit is empirical."),
    ] = None,
    task: Annotated[str, typer.Option("--task", help=f"One of {_registered('task')}: selective (accept or reject "
                                      "a prediction), ood (in or out of distribution).")] = "selective",
    tpr: Annotated[float, typer.Option("--tpr", help="Task ood: target in-distribution TPR.")] = 0.95,
    ood_data: Annotated[
        Path | None, typer.Option("--ood-data", help="Task ood: OOD data (.npz, IDX or image folder), only to "
                                  "report FPR and AUROC.")
    ] = None,
    policy: Annotated[
        str, typer.Option("--policy", help="window (default), threshold (older single-threshold cascade), "
                          "none (first member only) or all (full ensemble).")
    ] = "window",
    eps: Annotated[
        float, typer.Option("--eps", help="Window search: tolerated loss of coverage at the target risk "
                            "behind the full ensemble (0.005 = 0.5 points).")
    ] = 0.005,
    widths: Annotated[
        str | None, typer.Option("--widths", help="Fix the window band instead of searching: 'W_LO,W_HI' "
                                 "quantile widths (0.1,0.1 is the reference method's 20% band).")
    ] = None,
    budget: Annotated[
        float | None, typer.Option("--budget", help="Policy threshold: fraction of inputs passed on "
                                   "(default: the pass fraction of the window the search finds).")
    ] = None,
    score: Annotated[
        str | None, typer.Option("--score", help=f"One of {_registered('score')} (default: the task's, msp for "
                                 "selective, neg_energy for ood).")
    ] = None,
    cost: Annotated[
        str, typer.Option("--cost", help="Price stages by member MACs (macs) or measured latency "
                          "(latency, needs --bench).")
    ] = "macs",
    bench: Annotated[
        Path | None, typer.Option("--bench", help="JSON written by 'wcx bench --json' (for --cost latency).")
    ] = None,
    fit_fraction: Annotated[
        float, typer.Option("--fit-fraction", help="Guaranteed mode: share of the held-out set that fits "
                            "the windows; the rest certifies tau.")
    ] = 0.3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fit/certify split and of the bootstrap "
                                      "(recorded).")] = 0,
    n_boot: Annotated[
        int, typer.Option("--n-boot", help="Window search: bootstrap resamples that measure each cascade's "
                          "gap noise; feasible iff gap + its std <= eps (0: plain gap <= eps).")
    ] = 100,
    combine: Annotated[
        str, typer.Option("--combine", help="What a stage outputs: mean (the mean of the members run so far, the "
                          "stage ensemble) or last (its own member's alone: a confidence cascade, for members of "
                          "very different strength).")
    ] = "mean",
    test: Annotated[
        Path | None, typer.Option("--test", help="Test data, as --data (or a logits .npz with --logits), measured "
                                  "with the fitted thresholds, never re-fitted.")
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help=_backend_help(auto=False))] = "onnxruntime",
    threads: Annotated[int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads.")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write plots (risk-coverage, cost vs coverage) to this dir.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the calibration report JSON here.")]
    = None,
    replace_certified: Annotated[
        bool, typer.Option("--replace-certified", help="Allow an empirical (uncertified) fit to replace the "
                           "bundle's certified calibration.")
    ] = False,
    recertify: Annotated[
        bool, typer.Option("--recertify", help="Keep the bundle's windows and re-certify only tau on new labelled "
                           "--data (same target; its delta unless --delta is given); the previous calibration "
                           "goes into the manifest's history. Exit 1 and the bundle unchanged when nothing "
                           "can be certified.")
    ] = False,
) -> None:
    """Fit the acceptance threshold and window bounds on held-out data for a risk target.

    Writes the policy and calibration into the bundle's manifest (atomically). Exit 1 when no
    threshold can be certified (the JSON is still written), 2 for bad input, including too few
    held-out inputs for a certificate (the JSON is still written, with n_needed). A certified
    calibration is only replaced by an empirical one with --replace-certified.
    """
    from wcx.calibration.calibrator import CascadeCalibrator
    from wcx.calibration.held_out import calibrate_logits, open_data_for
    from wcx.errors import InsufficientDataError

    check_outputs(json_out)
    if recertify:
        _recertify(bundle, data, logits=logits, delta=delta, backend=backend, threads=threads, json_out=json_out)
        return
    try:
        if (bundle is None) == (logits is None):
            raise BadInputError("give either a BUNDLE (with --data) or --logits LOGITS.npz")
        fixed = None
        if widths is not None:
            try:
                w_lo, w_hi = (float(v) for v in widths.split(","))
            except ValueError:
                raise BadInputError(f"--widths: expected 'W_LO,W_HI', got {widths!r}") from None
            fixed = (w_lo, w_hi)
        if cost == "latency" and bench is None:
            raise BadInputError("--cost latency needs --bench BENCH.json (from 'wcx bench --json')")
        fit_options: dict[str, Any] = dict(
            task=task, score=score, risk=risk, tpr=tpr, delta=delta, eps=eps, policy=policy, widths=fixed,
            budget=budget, fit_fraction=fit_fraction, seed=seed, cost=cost, n_boot=n_boot, combine=combine,
        )
        if logits is not None:
            calibrator = CascadeCalibrator(**fit_options)
            fitted = calibrate_logits(logits, calibrator, test=test)
            result, fit_logits, fit_y = fitted.report, fitted.logits, fitted.labels
        else:
            from wcx.bundle import Bundle
            from wcx.workflow import calibrate as calibrate_workflow

            if data is None:
                raise BadInputError("--data VAL.npz is required with a BUNDLE")
            assert bundle is not None
            b = Bundle.load(bundle)
            needs_labels = CascadeCalibrator(**fit_options).target.needs_labels  # checks the options first
            ds = open_data_for(b, data, require_labels=needs_labels)
            test_ds = open_data_for(b, test, require_labels=needs_labels) if test else None
            ood_ds = open_data_for(b, ood_data, require_labels=False) if ood_data else None
            with _progress("running members on held-out data") as advance:
                done = calibrate_workflow(
                    b, ds, **fit_options, bench=_read_json(bench) if cost == "latency" and bench else None,
                    backend=backend, threads=threads, test=test_ds, ood_data=ood_ds,
                    replace_certified=replace_certified, progress=advance,
                )
            calibrator = done.calibrator
            result, fit_logits, fit_y = done.report, done.logits, done.labels
        if report is not None:
            from wcx.calibration.report import write_report

            result["plots"] = [str(p) for p in write_report(calibrator, fit_logits, fit_y, report)]
        if json_out is not None:
            write_json(json_out, result)
        _print_calibration(result)
        calibrator.raise_if_failed()
    except InsufficientDataError as exc:
        if json_out is not None:  # a script reads n_needed from it
            write_json(json_out, {**exc.report, "error": cli_message(str(exc))})
        raise


# ---------------------------------------------------------------------------------------------
# wcx plan  (owned by wcx.calibration: planner, pareto_testing, plan_bundle)
# ---------------------------------------------------------------------------------------------
@app.command("plan")
def plan_command(
    pool: Annotated[Path, typer.Argument(help="Bundle holding the pool of members to choose from (any sizes, "
                                         "seeds, architectures with one input contract).")],
    data: Annotated[Path, typer.Option("--data", help="Labelled held-out data never used for training (.npz, IDX "
                                       "or image folder); every pool member runs on it once.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Write the planned, calibrated cascade bundle here.")],
    risk: Annotated[float, typer.Option("--risk", help="Target selective risk in (0, 1).")] = 0.05,
    delta: Annotated[float, typer.Option("--delta", help="The certificate: P(risk <= target) >= 1 - delta, for "
                                         "the cascade picked among all candidates (certified together).")] = 0.1,
    match: Annotated[str | None, typer.Option("--match", help="Cheapest cascade whose certified coverage reaches "
                                              "this pool member's own.")] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="Best certified coverage at or under this "
                                                   "expected cost per input (MACs, or ms with --cost latency).")]
    = None,
    cost: Annotated[str, typer.Option("--cost", help="Price members by MACs (macs) or by measured latency "
                                      "(latency, needs --bench from the target device).")] = "macs",
    bench: Annotated[Path | None, typer.Option("--bench", help="JSON of 'wcx bench --json' on the pool (for "
                                               "--cost latency).")] = None,
    max_stages: Annotated[int, typer.Option("--max-stages", help="Most members per cascade (each at most "
                                            "once).")] = 4,
    score: Annotated[str, typer.Option("--score", help=f"One of {_registered('score')}.")] = "msp",
    combine: Annotated[str, typer.Option("--combine", help="What a stage may output, comma-separated, each "
                                         "searched: mean (the mean of the members run so far) and/or last (its "
                                         "own member's alone, a confidence cascade): mean,last searches "
                                         "both.")] = "mean",
    fit_fraction: Annotated[float, typer.Option("--fit-fraction", help="Share of the held-out set that chooses "
                                                "the cascades; the rest certifies.")] = 0.3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fit/certify split (recorded).")] = 0,
    selection: Annotated[str, typer.Option("--selection", help="How the candidates are certified together: "
                                           "bonferroni (each at delta / candidates) or fixed_sequence (Pareto "
                                           "Testing's one sequence ordered on the fit part).")] = "bonferroni",
    test: Annotated[Path | None, typer.Option("--test", help="Labelled test data: the report also measures "
                                              "every configuration there (nothing is fitted on it).")] = None,
    backend: Annotated[str, typer.Option("--backend", help=_backend_help(auto=False))] = "onnxruntime",
    threads: Annotated[int | None, typer.Option("--threads", help="ONNX Runtime intra-op threads.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the plan JSON here.")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the coverage-vs-cost plot(s) and the "
                                                "plan JSON to this dir.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing bundle at --out.")] = False,
) -> None:
    """Plan the cheapest certified cascade from a pool of members: which, in which order, windows, tau.

    Searches orders of up to --max-stages pool members and their windows on part of the held-out
    data, certifies the best candidates' thresholds together on the rest (so the choice keeps the
    guarantee: method.md, "Planning a cascade from a pool"), and writes the chosen cascade as a
    calibrated bundle. Exit 1
    when nothing is certified for the objective (the JSON is still written), 2 for bad input.
    """
    from wcx.bundle import Bundle
    from wcx.calibration.held_out import open_data_for
    from wcx.calibration.plan_bundle import plan_bundle, write_plan_plot

    check_outputs(json_out)
    if (match is None) == (max_cost is None):
        raise BadInputError("give exactly one objective: --match MEMBER or --max-cost N")
    if cost == "latency" and bench is None:
        raise BadInputError("--cost latency needs --bench BENCH.json (from 'wcx bench --json' on the pool)")
    b = Bundle.load(pool)
    ds = open_data_for(b, data, require_labels=True)
    test_ds = open_data_for(b, test, require_labels=True) if test else None
    with _progress("running the pool's members on held-out data") as advance:
        done = plan_bundle(
            b, ds, out_dir, risk=risk, delta=delta, match=match, max_cost=max_cost, cost=cost,
            bench=_read_json(bench) if cost == "latency" and bench else None, max_stages=max_stages, score=score,
            fit_fraction=fit_fraction, seed=seed, selection=selection, backend=backend, threads=threads, test=test_ds,
            overwrite=overwrite, progress=advance, combines=[c.strip() for c in combine.split(",") if c.strip()],
        )
    result = done.report
    if report is not None:
        plots = [write_plan_plot(result, report)]
        if test is not None:
            plots.append(write_plan_plot(result, report, part="test"))
        result["plots"] = [str(p) for p in plots]
        write_json(report / "plan.json", result)
    if json_out is not None:
        write_json(json_out, result)
    _print_plan(result)
    done.raise_if_failed()


def _print_plan(r: dict[str, Any]) -> None:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    unit = "MACs" if r.get("cost") == "macs" else "ms"
    table = Table(title=f"plan candidates (risk {r['risk']:g}; certified coverage on the certify part)")
    for col in ("members", f"expected {unit}", "certified coverage", "risk bound", ""):
        table.add_column(col, justify="left" if col == "members" else "right")
    plan = r.get("plan") or {}
    ref = r.get("reference")
    if ref is not None:
        table.add_row(f"{ref['member']} alone (to reach)", f"{ref['expected_cost']:,.4g}",
                      pct(ref["coverage"]) if ref["certified"] else "not certified", pct(ref["risk_upper_bound"]),
                      "reference")
    for c in r["candidates"]:
        own = " (own outputs)" if c.get("combine") == "last" else ""
        table.add_row(" > ".join(c["members"]) + own, f"{c['expected_cost']:,.4g}",
                      pct(c["coverage"]) if c["certified"] else "not certified", pct(c["risk_upper_bound"]),
                      "plan" if c["members"] == plan.get("members") else "")
    out.print(table)
    s = r["search"]
    sel = r["selection"]
    out.print(f"searched {s['evaluated']:,} cascades in {s['seconds']:.1f} s (front of {s['front_size']}); "
              f"{sel['n_candidates']} candidates certified together ({sel['method']}, delta {r['delta']:g} in all)")
    for part, f in (r.get("precision_flips") or {}).items():
        if f is None:
            continue
        swapped = ", ".join(f"{a} for {b}" for a, b in f["replaced"].items())
        w = f["in_window"]
        out.print(f"lower precision ({swapped}) flips {f['flips']} of {f['n']} accept decisions on the {part} data "
                  f"({100 * f['flip_rate']:.2f}%), {w['flips']} of the {w['n']} inputs passed on from stage 1")
    if r.get("manifest_written"):
        out.print(f"planned cascade {' > '.join(r['members'])} written to {r['bundle']}")


def _recertify(bundle: Path | None, data: Path | None, *, logits: Path | None, delta: float | None, backend: str,
               threads: int | None, json_out: Path | None) -> None:
    """``wcx calibrate BUNDLE --recertify --data NEW``: one call to :func:`wcx.workflow.recertify`."""
    from wcx.bundle import Bundle
    from wcx.calibration.held_out import open_data_for
    from wcx.calibration.recertify import KEEP_DELTA
    from wcx.errors import InsufficientDataError
    from wcx.workflow import recertify

    if bundle is None or data is None or logits is not None:
        raise BadInputError("--recertify needs a BUNDLE and --data NEW.npz (labelled), and no --logits")
    b = Bundle.load(bundle)
    try:
        source = open_data_for(b, data, require_labels=False)  # re-certification says which task needs them
        with _progress("running members on the new data") as advance:
            done = recertify(b, source, delta=KEEP_DELTA if delta is None else delta, backend=backend,
                             threads=threads, progress=advance)
    except InsufficientDataError as exc:
        if json_out is not None:
            write_json(json_out, {**exc.report, "error": cli_message(str(exc))})
        raise
    r = done.report
    if json_out is not None:
        write_json(json_out, r)
    table = Table(title=f"re-certification ({r['mode']}, {r['n']} new inputs)")
    for name in ("", "previous", "now"):
        table.add_column(name, justify="right" if name else "left")
    table.add_row("tau", f"{r['previous_tau']:.6g}" if r.get("previous_tau") is not None else "-",
                  f"{r['tau']:.6g}" if r.get("tau") is not None else "-")
    table.add_row("pass fraction", ", ".join(f"{p:.3f}" for p in r["previous_pass_fraction"]),
                  ", ".join(f"{p:.3f}" for p in r["pass_fraction"]))
    table.add_row("coverage", "", "-" if r.get("coverage") is None else f"{100 * r['coverage']:.2f}%")
    if r.get("risk_upper_bound") is not None:
        table.add_row("risk upper bound", "", f"{100 * r['risk_upper_bound']:.2f}%")
    out.print(table)
    if r["manifest_written"]:
        out.print(f"tau re-certified and written to {r['bundle']}/wcx.json (previous calibration kept in its history)")
    done.raise_if_failed()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc})") from None


def _print_calibration(r: dict[str, Any]) -> None:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    table = Table(title=f"calibration ({r['mode']}, policy {r['policy']}, score {r['score']})")
    table.add_column("")
    table.add_column("held-out", justify="right")
    if r.get("test"):
        table.add_column("test", justify="right")
    t = r.get("test") or {}
    rows: list[tuple[str, str, str]] = [
        ("tau", f"{r['tau']:.6g}" if r.get("tau") is not None else "-", ""),
        ("windows", json.dumps(r.get("windows") or r.get("thresholds")), ""),
        ("pass fraction", ", ".join(f"{p:.3f}" for p in r["pass_fraction"]),
         ", ".join(f"{p:.3f}" for p in t.get("pass_fraction", []))),
        ("expected MACs", f"{r['expected_macs']:,.0f}" if r.get("expected_macs") is not None else "-",
         f"{t['expected_macs']:,.0f}" if t.get("expected_macs") is not None else ""),
    ]
    if r["task"] == "selective":
        rows += [
            ("coverage", pct(r.get("coverage")), pct(t.get("coverage")) if t else ""),
            ("risk", pct(r.get("risk")), pct(t.get("risk")) if t else ""),
        ]
        if r.get("delta") is not None:
            rows.append(("risk upper bound", pct(r.get("risk_upper_bound")), ""))
    else:
        rows += [("TPR", pct(r.get("tpr")), pct(t.get("tpr")) if t else "")]
        if r.get("fpr") is not None:
            rows.append(("FPR (OOD)", pct(r.get("fpr")), pct(t.get("fpr")) if t else ""))
    if r.get("delta") is not None:
        rows.append(("certified", str(r["certified"]), ""))
    for name, a, b in rows:
        table.add_row(name, a, *([b] if r.get("test") else []))
    out.print(table)
    if r.get("manifest_written"):
        out.print(f"policy and calibration written to {r['bundle']}/wcx.json")



# ---------------------------------------------------------------------------------------------
# wcx run / wcx bench  (owned by wcx.runtime)
# ---------------------------------------------------------------------------------------------

@app.command("run")
def run_command(
    bundle: PolicyBundleArg,
    data: Annotated[Path, typer.Option("--data", help=(
        "Data read in chunks: an .npz with x (N, C, H, W) and optional labels y, an IDX images file (labels file "
        "beside it), or a folder of images (class sub-folders give labels)."))],
    out_path: Annotated[Path, typer.Option("--out", help=(
        "Write here (.npz), one entry per row: pred (the prediction), score (its confidence score), accept "
        "(score >= tau: the decision to act on), exit_stage (the 1-based stage the row left the cascade at), "
        "first_score (its stage-1 score); with --probs also probs (N, K); for an image folder also files and "
        "class_names."))],
    backend: BackendOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per cascade call.")] = 256,
    threads: ThreadsOpt = None,
    strict: StrictOpt = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the summary as JSON here.")] = None,
    probs: Annotated[bool, typer.Option("--probs", help="Also write probs: the exit stage's ensemble "
                                        "probabilities (N, K float32).")] = False,
    monitor: Annotated[bool, typer.Option("--monitor", help="Watch the run with the calibration's drift monitor "
                                          "(alpha 0.01) and report its alarms at the end.")] = False,
) -> None:
    """Run the cascade on a data file or image folder; with labels, print accuracy, coverage and risk."""
    from wcx.runtime.cli_support import run_on_file

    check_outputs(json_out)
    summary = run_on_file(bundle, data, out_path, backend=backend, batch_size=batch_size,
                          threads=threads, strict=strict, probs=probs, monitor=monitor)
    table = Table(title=f"wcx run  {bundle}  ({summary['backend']}/{summary['precision']})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key in ("n", "accepted", "coverage", "accuracy", "risk"):
        if key in summary:
            value = summary[key]
            table.add_row(key, "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("pass_fraction", ", ".join(f"{p:.3f}" for p in summary["pass_fraction"]))
    out.print(table)
    out.print(f"wrote {out_path}")
    if monitor:
        _print_monitor(summary["monitor"], title="drift monitor")
    if json_out:
        write_json(json_out, summary)


@app.command("monitor")
def monitor_command(
    bundle: PolicyBundleArg,
    data: Annotated[Path, typer.Option("--data", help=(
        "The stream to replay, in order: an .npz with x (N, C, H, W) and optional labels y (then the selective "
        "risk is watched too), an IDX images file or an image folder."))],
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per cascade call (the monitor tests at the "
                                            "first call end after 64, 81, 102, 128, ... inputs).")] = 64,
    alpha: Annotated[float, typer.Option("--alpha", help="Probability that a stream drawn like the calibration "
                                         "data ever raises a drift alarm, however long.")] = 0.01,
    horizon: Annotated[int, typer.Option("--horizon", help="Inputs within which an alarm is wanted: the exact "
                                         "tests spend half their budget evenly up to it, half after (a resumed "
                                         "--state keeps its own).")] = 2048,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    strict: StrictOpt = False,
    state: Annotated[Path | None, typer.Option("--state", help="Monitor state file: resumed when it exists, "
                                               "saved at the end.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the monitor's report as JSON here.")]
    = None,
) -> None:
    """Replay a data file through the cascade as a stream and report when and why its drift
    monitor alarms (label-free; with labels also a harmful-shift alarm on the selective risk).
    Exit 0 whether or not it alarmed; the report says."""
    from wcx.runtime.cli_support import monitor_file

    check_outputs(json_out, state)
    report = monitor_file(bundle, data, batch_size=batch_size, alpha=alpha, backend=backend, threads=threads,
                          strict=strict, state=state, horizon=horizon)
    if json_out:
        write_json(json_out, report)
    _print_monitor(report, title=f"wcx monitor  {bundle}  ({report['backend']}/{report['precision']})")


def _print_monitor(report: dict[str, Any], *, title: str) -> None:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    table = Table(title=f"{title}: {report['n_seen']} inputs, alpha {report['alpha']:g}")
    for name in ("statistic", "reference", "observed", "alarm"):
        table.add_column(name, justify="left" if name == "statistic" else "right")
    for row in report["statistics"]:
        lo, hi = row["reference_interval"]
        table.add_row(row["statistic"], f"{pct(row['reference'])} [{100 * lo:.1f}, {100 * hi:.1f}]",
                      pct(row["observed"]), "ALARM" if row["alarmed"] else "")
    risk = report.get("selective_risk")
    if risk and risk["labelled_accepted"]:
        table.add_row("selective_risk (labelled)", f"target {pct(risk['target'])}", pct(risk["observed"]),
                      "ALARM" if risk["alarmed"] else "")
    out.print(table)
    for alarm in report["alarms"]:
        out.print(escape(alarm["message"]))
    if not report["alarms"]:
        out.print("no alarm: the stream's rates agree with the calibration's reference")


@app.command("bench")
def bench_command(
    bundle: PolicyBundleArg,
    data: Annotated[Path, typer.Option("--data", help=".npz with x (N, C, H, W), IDX images file or image folder "
                                       "(images of one size); labels are ignored.")],
    batch_size: Annotated[str, typer.Option("--batch-size", help="Comma-separated batch sizes.")] = "1,32,256",
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed calls per configuration and batch size, at "
                                         "least.")] = 30,
    rows: Annotated[int, typer.Option("--rows", help="Different data rows timed per batch size, at least (batch 1: "
                                      "that many calls, one row each).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the permutation the batches are drawn from.")] = 0,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing.")] = 5,
    strict: StrictOpt = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write one row per configuration here (every "
                                                  "field).")] = None,
) -> None:
    """Measure the cascade, the full ensemble and each member alone over many different batches:
    median latency with its 95% CI, mean beside the expected latency, pass fractions, overhead."""
    from wcx.bundle import Bundle
    from wcx.runtime.bench import benchmark, timed_calls
    from wcx.runtime.bundle_data import read_data_for

    sizes = parse_int_list(batch_size, option="--batch-size")
    check_outputs(json_out)
    b = Bundle.load(bundle)
    most = max((timed_calls(s, repeats, rows) * s for s in sizes if s >= 1), default=1)  # rows the bench can use
    x = read_data_for(b, data, most, seed=seed)
    with _progress("benchmark") as advance:
        results = benchmark(b, x, sizes, backend=backend, warmup=warmup, repeats=repeats, rows=rows, seed=seed,
                            threads=threads, strict=strict, progress=advance)
    if json_out:
        write_json(json_out, [r.to_dict() for r in results])
    title = f"wcx bench  {bundle}  ({results[0].backend if results else backend})"
    for renderable in bench_tables([r.to_dict() for r in results], title=title, width=out.width, json_path=json_out):
        out.print(renderable)


def _ms(value: float | None) -> str:
    """Milliseconds with three significant decimals' worth of precision."""
    if value is None:
        return ""
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _fractions(values: list[float] | None) -> str:
    """Pass fractions as ``1/0.153``: three digits, none wasted on the whole first stage."""
    return "/".join(f"{p:.3g}" if p < 1 else "1" for p in values or [])


#: the columns of ``wcx bench``'s tables: header, how a row's cell is made, and whether every
#: terminal shows it (the others are shown, in this order, as far as the width allows)
_BENCH_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str], bool], ...] = (
    ("config", lambda r: str(r["config"]), True),
    ("p50 ms", lambda r: _ms(r["p50_ms"]), True),
    ("95% CI", lambda r: f"{_ms(r['p50_ci_ms'][0])}-{_ms(r['p50_ci_ms'][1])}" if r.get("p50_ci_ms") else "", True),
    ("mean", lambda r: _ms(r.get("mean_ms")), True),
    ("expected", lambda r: _ms(r.get("expected_ms")), True),
    ("pass", lambda r: _fractions(r.get("pass_fraction")), True),
    ("p90 ms", lambda r: _ms(r["p90_ms"]), False),
    ("p99 ms", lambda r: _ms(r["p99_ms"]), False),
    ("rows/s", lambda r: f"{r['throughput']:,.0f}", False),
    ("overhead", lambda r: "" if r.get("overhead") is None else f"{r['overhead']:.3f}x", False),
)


def bench_tables(rows: list[dict[str, Any]], *, title: str, width: int, json_path: Path | None = None) -> list[Any]:
    """What ``wcx bench`` prints for its JSON rows: a title, one table per batch size and the
    notes, fitted to ``width`` columns without cutting anything. The first six columns (latency,
    its CI, mean, expected, pass) are always there; p90, p99, rows/s and overhead as far as the
    width allows, and a note says where the others are. A cell too long even then wraps."""
    from rich.measure import Measurement
    from rich.text import Text

    from wcx.runtime.bench import CI_LEVEL

    sizes = list(dict.fromkeys(int(r["batch_size"]) for r in rows))
    probe = Console(width=max(width, 1000))

    def tables(columns: list[tuple[str, Callable[[dict[str, Any]], str], bool]]) -> list[Table]:
        made = []
        for size in sizes:
            group = [r for r in rows if int(r["batch_size"]) == size]
            caption = (f"batch {size}: {group[0].get('repeats', 0):,} timed calls on "
                       f"{group[0].get('distinct_rows', 0):,} different rows")
            table = Table(title=caption, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
                          collapse_padding=True)
            for header, _, _ in columns:
                table.add_column(header, justify="left" if header in ("config", "pass") else "right",
                                 overflow="fold")
            for r in group:
                table.add_row(*(cell(r) for _, cell, _ in columns))
            made.append(table)
        return made

    def fit(columns: list[tuple[str, Callable[[dict[str, Any]], str], bool]]) -> bool:
        return all(Measurement.get(probe, probe.options, t).maximum <= width for t in tables(columns))

    columns = [c for c in _BENCH_COLUMNS if c[2]]
    left_out = []
    for extra in (c for c in _BENCH_COLUMNS if not c[2]):
        trial = [c for c in _BENCH_COLUMNS if c in columns or c is extra]
        if fit(trial):
            columns = trial
        else:
            left_out.append(extra[0])
    notes = ["p50: median latency, with its 95% confidence interval from order statistics; mean: measured mean; "
             "expected: sum over stages of pass fraction x the stage's mean latency alone at this batch size; "
             "pass: fraction of the rows timed that reached each stage."]
    if any((r.get("p50_ci_coverage") or 1.0) < CI_LEVEL for r in rows):
        notes.append("With fewer than 6 timed calls a CI is [min, max] and covers less than 95% "
                     "(p50_ci_coverage in the JSON).")
    if left_out:
        where = f"{json_path} has" if json_path is not None else "--json PATH writes"
        notes.append(f"Not shown at this width: {', '.join(left_out)}; {where} every field.")
    return [Text(title), *tables(columns), *(Text(n) for n in notes)]


# ---------------------------------------------------------------------------------------------
# wcx build-engines  (owned by the TensorRT engine builder)
# ---------------------------------------------------------------------------------------------
@app.command("build-engines")
def build_engines_command(
    bundle: BundleArg,
    opt_batch: Annotated[
        int, typer.Option("--opt-batch", help="Batch size TensorRT tunes kernels for (profile opt).")
    ] = 32,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Largest batch the engine accepts (profile max); larger "
                          "subsets run in chunks.")
    ] = 256,
    workspace_mb: Annotated[
        int | None, typer.Option("--workspace-mb", help="Limit TensorRT's workspace pool (MiB); "
                                 "default: TensorRT's own limit.")
    ] = None,
    trt_log_level: Annotated[
        str, typer.Option("--trt-log-level", help="TensorRT messages forwarded to the log: "
                          "error, warning, info or verbose.")
    ] = "warning",
    member: Annotated[
        list[str] | None, typer.Option("--member", help="Build only this member (repeatable).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the engine records as JSON here.")
    ] = None,
) -> None:
    """Build a TensorRT engine per member on this GPU (strongly typed, from the member's ONNX)."""
    from wcx.bundle import Bundle

    check_outputs(json_out)
    from wcx.export.engine_compat import import_tensorrt
    from wcx.export.tensorrt_engine import TRT_LOGGER_NAME, build_engines, python_log_level

    import_tensorrt("wcx build-engines")  # refuse before reading anything when TensorRT is missing
    logging.getLogger(TRT_LOGGER_NAME).setLevel(python_log_level(trt_log_level))
    records = build_engines(
        Bundle.load(bundle), opt_batch=opt_batch, max_batch=max_batch, workspace_mb=workspace_mb,
        log_level=trt_log_level, members=member or None,
    )
    table = Table(title=f"TensorRT engines in {bundle}")
    for col in ("member", "precision", "file", "profile (min/opt/max batch)", "TensorRT", "GPU", "sha256"):
        table.add_column(col)
    for rec in records:
        prof = rec.profile
        table.add_row(
            rec.member, str(rec.precision), rec.file, f"{prof['min'][0]}/{prof['opt'][0]}/{prof['max'][0]}",
            rec.tensorrt_version, f"{rec.gpu_name} (sm {rec.compute_capability})", rec.sha256[:12],
        )
    out.print(table)
    if json_out:
        write_json(json_out, [r.to_dict() for r in records])


# ---------------------------------------------------------------------------------------------
# wcx serve
# ---------------------------------------------------------------------------------------------
@app.command("serve")
def serve_command(
    bundle: PolicyBundleArg,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option("--port", help="HTTP port (KServe v2); gRPC listens on PORT+1, Triton's "
                                      "metrics on PORT+2, wcx's per-stage metrics on PORT+3 (/metrics).")] = 8000,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most rows Triton's dynamic batcher merges into "
                                           "one cascade call (and the most one request may send).")] = 256,
    max_queue_delay_us: Annotated[int, typer.Option("--max-queue-delay-us", help="Microseconds the dynamic "
                                                    "batcher waits for more requests to merge.")] = 100,
    input_dtype: Annotated[str | None, typer.Option("--input-dtype", help="Dtype of input x: float32 (in the "
                                                    "bundle's input range) or uint8 (pixels). Default: uint8 for "
                                                    "bundles that resize frames, else float32.",
                                                    show_default=False)] = None,
    probs: Annotated[bool, typer.Option("--probs", help="Also return probs (N, K float32).")] = False,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    strict: StrictOpt = False,
    monitor: Annotated[bool, typer.Option("--monitor", help="Watch every served row with the calibration's drift "
                                          "monitor: alarms in the log and on the wcx metrics port (/metrics, "
                                          "/monitor as JSON).")] = False,
    alpha: Annotated[float, typer.Option("--alpha", help="With --monitor: probability that traffic drawn like the "
                                         "calibration data ever raises a drift alarm.")] = 0.01,
) -> None:
    """Serve the calibrated cascade from NVIDIA Triton (via PyTriton; the serve extra, in its own
    environment): model wcx_cascade, input x (N, C, H, W), outputs pred, score, accept, exit_stage.
    Stops on SIGTERM or Ctrl-C."""
    from wcx.serve.server import ServerInfo, serve

    def announce(info: ServerInfo) -> None:
        err.print(f"serving {bundle} as model '{info.model_name}' ({info.backend}; x {info.input_dtype} "
                  f"(N, {', '.join(map(str, info.sample_shape))}), N <= {info.max_batch}) on "
                  f"http://{info.host}:{info.http_port}, gRPC {info.host}:{info.grpc_port}, Triton metrics "
                  f":{info.metrics_port}, wcx metrics http://{info.host}:{info.wcx_metrics_port}/metrics",
                  markup=False, highlight=False, soft_wrap=True)

    final = serve(bundle, host=host, port=port, max_batch=max_batch, max_queue_delay_us=max_queue_delay_us,
                  input_dtype=input_dtype, probs=probs, backend=backend, threads=threads, strict=strict,
                  monitor=monitor, alpha=alpha, on_ready=announce)
    err.print(f"stopped after {final['requests']} requests ({final['rows']} rows, {final['failed_requests']} "
              "failed)", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------
# wcx export-triton
# ---------------------------------------------------------------------------------------------
@app.command("export-triton")
def export_triton_command(
    bundle: PolicyBundleArg,
    out_dir: Annotated[Path, typer.Option("--out", help="The model repository to write (a new folder, or one this "
                                          "command wrote, with --overwrite).")],
    members: Annotated[str, typer.Option("--members", help="How members are served: onnxruntime (Triton's ONNX "
                                         "Runtime backend), tensorrt (plans built in the container by "
                                         "build_tensorrt_plans.sh) or python (ONNX Runtime in the Python backend, "
                                         "for a Triton with only that backend).")] = "onnxruntime",
    max_batch: Annotated[int, typer.Option("--max-batch", help="Every model's max_batch_size.")] = 256,
    max_queue_delay_us: Annotated[int, typer.Option("--max-queue-delay-us", help="Dynamic batching delay of every "
                                                    "model, microseconds.")] = 100,
    instances: Annotated[int, typer.Option("--instances", help="Instances per model (instance_group count).")] = 1,
    input_dtype: Annotated[str | None, typer.Option("--input-dtype", help="Dtype of input x: float32 or uint8 (as "
                                                    "for wcx serve).", show_default=False)] = None,
    probs: Annotated[bool, typer.Option("--probs", help="Also return probs (N, K float32).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a repository this command wrote.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Write a Triton model repository: one model per member and a Python-backend (BLS) model,
    wcx_cascade, that runs member m+1 only on the rows still in their windows."""
    from wcx.serve.repository import export_triton

    check_outputs(json_out)
    report = export_triton(bundle, out_dir, members=members, max_batch=max_batch,
                           max_queue_delay_us=max_queue_delay_us, instances=instances, input_dtype=input_dtype,
                           probs=probs, overwrite=overwrite)
    out.print(f"wrote {report.path}: models {', '.join(report.models)} (members: {report.members})",
              markup=False, highlight=False, soft_wrap=True)
    out.print("config.pbtxt files " + (f"parsed with {report.validated_with}" if report.validated_with else
              "not parsed (install tritonclient[grpc] to check them with Triton's model-config protobuf)"),
              markup=False, highlight=False)
    if report.build_script is not None:
        out.print(f"build the TensorRT plans inside the Triton container: {report.build_script}", markup=False,
                  highlight=False)
    if json_out:
        write_json(json_out, report.to_dict())


# ---------------------------------------------------------------------------------------------
# wcx demo
# ---------------------------------------------------------------------------------------------
@app.command("demo")
def demo_command(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the calibrated bundle (DIR/bundle), the plots and "
                           "results.json: a new or empty folder, or the output of an earlier demo (replaced).")
    ] = Path("wcx-demo"),
    size: Annotated[
        str | None, typer.Option("--size", help="Zoo size of the cascade's two members: b0, b1, b2 or b3 "
                                 "(default b3).", show_default=False)
    ] = None,
    threads: ThreadsOpt = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed calls per latency measurement, at least (batch 1 "
                                         "times 1,000 different images).")] = 20,
) -> None:
    """Offline demo on the bundled Fashion-MNIST zoo: a two-member window cascade calibrated at 5%
    risk with a guarantee (delta 0.1), measured on the test split and benchmarked on ONNX Runtime
    against the full ensemble and single larger models."""
    from wcx.demo import run_demo

    with _progress("wcx demo") as advance:
        result = run_demo(out_dir, size=size, threads=threads, repeats=repeats, progress=advance)
    _render_demo(result)


def _render_demo(result: Any) -> None:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    def macs(v: float) -> str:
        return f"{v / 1e6:.2f}M"

    table = Table(
        title="wcx demo: Fashion-MNIST zoo, risk 5%, delta 0.1",
        caption=("fitted on calib, measured on test (%); bound: certified risk upper bound; MACs: expected per "
                 "image; ms: ONNX Runtime median latency at batch 1 / 256 over at least 1,000 different test "
                 "images, every configuration timed in the same rounds (95% CIs in results.json); pass: share of "
                 "images reaching stage 2"),
    )
    for col in ("configuration", "coverage", "risk", "bound", "MACs", "ms@1", "ms@256", "pass"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in result.rows:
        pf = r["pass_fraction"]
        table.add_row(
            r["label"], pct(r["coverage"]), pct(r["risk"]), pct(r["risk_upper_bound"]) if r["certified"] else "none",
            macs(r["expected_macs"]), ms(r["latency_ms"]["1"]), ms(r["latency_ms"]["256"]),
            f"{100 * pf[-1]:.1f}%" if len(pf) > 1 else "-",
        )
    out.print(table)
    c = result.claim
    parts = [f"searched cascade vs single {c['against']}: coverage {c['coverage_points']:+.2f} points"]
    if c.get("macs_ratio") is not None:
        parts.append(f"{100 * c['macs_ratio']:.0f}% of its MACs")
    for b in ("256", "1"):
        if c.get(f"latency_ratio_{b}") is not None:
            span = c.get(f"latency_ratio_{b}_range")
            noise = f" (95% CIs of the medians allow {100 * span[0]:.0f}-{100 * span[1]:.0f}%)" if span else ""
            parts.append(f"{100 * c[f'latency_ratio_{b}']:.0f}% of its median latency at batch {b}{noise}")
    out.print(", ".join(parts))
    out.print(f"bundle: {result.bundle}, plots: {result.out_dir / 'plots'}, results: {result.results} "
              f"({result.seconds:.0f} s)")


def main() -> None:
    """Console entry point: the one error boundary of the CLI."""
    # typer's standalone mode turns usage errors into exit code 2 and Ctrl-C into an abort;
    # commands render their own WcxErrors (_error_boundary); this catches the rest (callbacks).
    warnings.showwarning = _show_warning
    try:
        app()
    except WcxError as exc:
        if _debugging():
            raise
        _render_error(exc)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if _debugging():
            raise
        message, code = os_error_exit(exc)
        err.print(f"[red]error:[/red] {escape(_one_line(message))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
