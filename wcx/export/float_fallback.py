"""Accuracy-aware INT8: keep the fewest layers in float that bring the agreement up to a target.

Some networks lose top-1 agreement with FP32 in one or two layers (measured on the zoo: the
smallest member, b0_s0, fell to 96% fully quantized and passed 98% with one of its four
weighted layers in float, a different layer for different range samples). ``int8_float_layers=
"auto"`` finds such layers by measurement, in the spirit of accuracy-aware post-training
quantization (NNCF's ``quantize_with_accuracy_control``, which reverts the most sensitive
layers to float until a metric is met):

1. quantize every layer; if the agreement on the selection rows reaches ``target``, stop;
2. else rank the candidate layers by the agreement with that one layer in float (one
   quantization each; with more than :data:`MAX_CANDIDATES` weighted layers only the first and
   last ``MAX_CANDIDATES // 2``, where quantization error concentrates);
3. keep layers in float in that order, one more per quantization, until the agreement reaches
   ``target`` or :data:`MAX_AUTO_FLOAT_LAYERS` are float; the graph written is the first that
   reaches it, else the one with the highest agreement seen.

The selection rows are unlabelled inputs that neither set the activation ranges nor judge the
export's gate (the exporter draws up to :data:`AUTO_SELECTION_ROWS` of them from the calibration
rows the range sample left; where
none are left it passes the range sample itself and says so), so the gate stays an
independent check of the choice. ``target`` is the gate plus :data:`AUTO_MARGIN`, because the gate
is judged on other rows with their own sampling noise.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wcx.atomic import atomic_write
from wcx.export.precision import check_float_layers, quantize_int8

#: the ``int8_float_layers`` value that asks for this search
AUTO = "auto"
#: the search aims this far above the gate (agreement is a fraction)
AUTO_MARGIN = 0.005
#: at most this many layers are kept in float by the search
MAX_AUTO_FLOAT_LAYERS = 3
#: at most this many layers are tried one at a time (the first and last halves of the graph's)
MAX_CANDIDATES = 8
#: at most this many selection rows: agreement near 98.5% on 4,096 rows has a standard error of
#: 0.19 points, on 1,024 of 0.38 (measured on the zoo: with 1,024 a member chosen at 98.54%
#: fell to 97.6% on the gate's rows)
AUTO_SELECTION_ROWS = 4096


def candidate_layers(weighted_layers: int) -> list[str]:
    """The ``layer:K`` parts the search tries for a graph with ``weighted_layers`` weighted nodes:
    ``first`` for K = 0 (it also keeps the graph input float), ``last`` for the last (with what
    follows it), all of them up to :data:`MAX_CANDIDATES`, else the first and last halves.

    >>> candidate_layers(3)
    ['first', 'layer:1', 'last']
    >>> candidate_layers(20)[:5], len(candidate_layers(20))
    (['first', 'layer:1', 'layer:2', 'layer:3', 'layer:16'], 8)
    """
    k = range(weighted_layers)
    if weighted_layers > MAX_CANDIDATES:
        half = MAX_CANDIDATES // 2
        k = [*range(half), *range(weighted_layers - half, weighted_layers)]  # type: ignore[assignment]
    names = {weighted_layers - 1: "last", 0: "first"}  # one layer: "first", which also keeps the input
    return [names.get(i, f"layer:{i}") for i in k]


def quantize_int8_auto(
    src: str | Path,
    dst: str | Path,
    calib_x: np.ndarray,
    select_x: np.ndarray,
    *,
    input_name: str,
    target: float,
    run: Callable[[Path, np.ndarray], np.ndarray],
    selection_source: str,
    progress: Callable[[str], None] | None = None,
    **quantize_options: Any,
) -> dict[str, Any]:
    """Write an INT8 copy of ``src`` to ``dst`` with the fewest layers in float (module docstring)
    whose top-1 agreement with ``src`` on ``select_x`` reaches ``target``.

    ``run(path, x)`` returns a graph's logits (the same runtime the gate uses); the other options
    go to :func:`wcx.export.precision.quantize_int8`. Returns that function's options for the
    graph written, with ``float_layers`` the layers chosen and ``auto``: the target, the
    selection rows and every configuration tried with its agreement.
    """
    reference = np.asarray(run(Path(src), select_x)).argmax(1)
    trials: list[dict[str, Any]] = []
    graphs: list[tuple[Path, dict[str, Any]]] = []  # each trial's graph and options, by trial
    with tempfile.TemporaryDirectory(prefix="wcx-int8-auto-") as tmp:

        def attempt(layers: tuple[str, ...]) -> float:
            if progress is not None:
                progress(f"INT8 with {', '.join(layers) or 'every layer quantized'}")
            path = Path(tmp) / f"trial{len(trials)}.onnx"
            options = quantize_int8(src, path, calib_x, input_name=input_name, float_layers=layers,
                                    **quantize_options)
            agreement = float(np.mean(np.asarray(run(path, select_x)).argmax(1) == reference))
            trials.append({"float_layers": list(layers), "agreement": agreement})
            graphs.append((path, options))
            return agreement

        if attempt(()) < target:
            ranked: list[tuple[float, str]] = []
            for layer in candidate_layers(int(graphs[0][1]["weighted_layers"])):
                ranked.append((attempt((layer,)), layer))
                if ranked[-1][0] >= target:
                    break
            ranked.sort(key=lambda pair: -pair[0])
            chosen: tuple[str, ...] = (ranked[0][1],) if ranked else ()
            for _, layer in ranked[1:MAX_AUTO_FLOAT_LAYERS]:
                if max(t["agreement"] for t in trials) >= target:
                    break
                chosen = check_float_layers([*chosen, layer])
                attempt(chosen)
        # the first graph that reached the target (the fewest layers in float), else the best seen
        reached = [i for i, t in enumerate(trials) if t["agreement"] >= target]
        pick = reached[0] if reached else max(range(len(trials)), key=lambda i: trials[i]["agreement"])
        path, options = graphs[pick]
        agreement = trials[pick]["agreement"]
        with atomic_write(dst) as staged:
            shutil.copyfile(path, staged)
    options = dict(options)
    options["auto"] = {"target": target, "selection_rows": int(len(select_x)),
                       "selection_source": selection_source, "agreement": agreement,
                       "reached": agreement >= target, "trials": trials}
    return options
