"""Answering the requests of one dynamic batch: each is checked against the serving contract,
the cascade runs once on the rows of the good ones, each gets its own rows back.

The same function serves ``wcx serve`` (PyTriton) and the exported BLS model, so the two answer
alike. Conventions: ``xs[i]`` is request i's input ``x`` (None when it has none); the result has
one entry per request, its output tensors or the ``BadInputError`` that refused it (the caller
turns that into an error response); requests are answered in order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from wcx.errors import BadInputError
from wcx.serve.contract import ServingContract, rows_of
from wcx.serve.metrics import ServeMetrics

__all__ = ["answer_requests", "answer_checked"]


def answer_requests(cascade: Any, contract: ServingContract, xs: Sequence[np.ndarray | None], *,
                    metrics: ServeMetrics | None = None) -> list[dict[str, np.ndarray] | BadInputError]:
    """Answer the requests ``xs`` of one batch with ``cascade`` (see the module docstring)."""
    answers: list[dict[str, np.ndarray] | BadInputError] = []
    good: list[np.ndarray] = []
    for i, x in enumerate(xs):
        try:
            good.append(contract.check_request(x, where=f"request {i + 1} of {len(xs)}"))
            answers.append({})
        except BadInputError as exc:
            answers.append(exc)
    if metrics is not None and len(good) < len(xs):
        metrics.record_failure(len(xs) - len(good))
    if not good:
        return answers
    spans = iter(answer_checked(cascade, contract, good, metrics=metrics))
    return [next(spans) if isinstance(a, dict) else a for a in answers]


def answer_checked(cascade: Any, contract: ServingContract, good: Sequence[np.ndarray], *,
                   metrics: ServeMetrics | None = None) -> list[dict[str, np.ndarray]]:
    """The answers to requests already checked by :meth:`ServingContract.check_request` (each
    one's output tensors, in order): the cascade runs once on their concatenated rows."""
    x = good[0] if len(good) == 1 else np.concatenate(good)
    start = time.perf_counter()
    out = cascade(x, return_probs=contract.probs, timing=metrics is not None)
    if metrics is not None:
        metrics.record(requests=len(good), exit_stage=out.exit_stage, accept=out.accept,
                       seconds=time.perf_counter() - start,
                       stage_seconds=out.timing.stage_seconds if out.timing is not None else None)
    tensors = contract.response(out)
    return [{k: v[a:b] for k, v in tensors.items()} for a, b in rows_of([len(g) for g in good])]
