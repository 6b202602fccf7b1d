"""The ``wcx`` command line: a thin layer over the library.

Each command parses its options, makes one call into the library and renders the result.
Results go to stdout (and to ``--json PATH``); logs and progress bars go to stderr. One error
boundary (``main``) turns a ``WcxError`` into a one-line red message and the exit code of
method.md section 7 (0 ok, 1 the work failed, 2 bad input); ``--debug`` or ``WCX_DEBUG=1`` shows
the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wcx import __version__
from wcx.errors import BadInputError, WcxError

app = typer.Typer(
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
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def write_json(path: Path, data: Any) -> None:
    """Write a command's JSON result atomically."""
    from wcx.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def parse_int_list(text: str, *, option: str) -> list[int]:
    """Parse '1,32,256' into [1, 32, 256]; a bad value is a BadInputError naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise BadInputError(f"{option}: expected positive integers, got {text!r}")
    return values


# ---------------------------------------------------------------------------------------------
# wcx inspect
# ---------------------------------------------------------------------------------------------
@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (holds wcx.json).")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the manifest summary as JSON here.")
    ] = None,
) -> None:
    """Verify a bundle (files and hashes) and print its members, policy and calibration."""
    from wcx.bundle import Bundle

    b = Bundle.load(bundle)
    table = Table(title=f"{b.path}  (schema {b.manifest['schema_version']})")
    for col in ("stage", "name", "precision", "file", "input", "classes", "MACs", "sha256"):
        table.add_column(col)
    for i, m in enumerate(b.members, start=1):
        shape = "x".join("N" if d is None else str(d) for d in m.input_shape)
        table.add_row(
            str(i), m.name, m.precision, m.file, f"{m.input_name} {shape} {m.input_dtype}",
            str(m.num_classes), f"{m.macs:,}", m.sha256[:12],
        )
    out.print(table)
    policy = b.policy
    if policy:
        out.print(f"policy: {json.dumps(policy)}")
    calib = b.calibration
    if calib:
        keys = ("backend", "precision", "risk", "delta", "certified", "risk_upper_bound", "coverage")
        out.print("calibration: " + ", ".join(f"{k}={calib.get(k)}" for k in keys if k in calib))
    if json_out:
        write_json(json_out, b.manifest)


# ---------------------------------------------------------------------------------------------
# wcx export  (owned by wcx.export)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# wcx calibrate  (owned by wcx.calibration)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# wcx run / wcx bench  (owned by wcx.runtime)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# wcx build-engines  (owned by the TensorRT engine builder)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# wcx demo
# ---------------------------------------------------------------------------------------------


def main() -> None:
    """Console entry point: the one error boundary of the CLI."""
    # typer's standalone mode already turns usage errors into exit code 2 and Ctrl-C into an
    # abort; everything wcx raises on purpose is a WcxError and is rendered here.
    try:
        app()
    except WcxError as exc:
        if _DEBUG["on"] or os.environ.get("WCX_DEBUG") == "1":
            raise
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
