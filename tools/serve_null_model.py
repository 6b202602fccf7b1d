#!/usr/bin/env python
"""``wcx serve`` with the inference taken out: the transport floor of serving on this machine.

Starts exactly what ``wcx serve BUNDLE`` starts (PyTriton, the same model name, input and output
tensors, dynamic batcher, request checks and per-stage metrics) but the cascade it binds answers
every batch without running a member: zeros for ``pred``/``score``, ``accept`` False,
``exit_stage`` 1. A client's throughput against it is the most any cascade served this way can
reach on the machine (what HTTP, Triton's queue, PyTriton's hand-off to this process and the
copies cost per request); ``tools/serve_benchmark.py`` drives it next to the real servers.

Run with the serving environment's interpreter::

    .venv-serve/bin/python tools/serve_null_model.py BUNDLE --port 8000 [--input-dtype uint8]

Stops on SIGTERM/SIGINT, like ``wcx serve``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class NullCascade:
    """A loaded cascade whose call answers without inference (everything else is the real one's:
    input section, stages, classes, backend name), so the serving contract is the same."""

    def __init__(self, cascade: Any) -> None:
        self._cascade = cascade

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cascade, name)

    def __call__(self, x: np.ndarray, *, return_probs: bool = False, timing: bool = False) -> Any:
        from wcx.runtime.executor import CascadeOutput

        n = int(x.shape[0])
        probs = np.zeros((n, self._cascade.num_classes), dtype=np.float32) if return_probs else None
        return CascadeOutput(pred=np.zeros(n, dtype=np.int64), score=np.zeros(n), accept=np.zeros(n, dtype=bool),
                             exit_stage=np.ones(n, dtype=np.int64), probs=probs, n_stages=self._cascade.n_stages,
                             first_score=np.zeros(n))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="a calibrated bundle (its serving contract is used, not its members)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (gRPC, metrics: the next three)")
    p.add_argument("--input-dtype", default=None, help="uint8 or float32 (default: the bundle's input dtype)")
    args = p.parse_args(argv)
    import wcx.runtime.cascade as cascade_module
    from wcx.serve.server import serve

    real_load = cascade_module.Cascade.load

    @contextlib.contextmanager
    def null_load(*a: Any, **k: Any) -> Iterator[NullCascade]:
        with real_load(*a, **k) as cascade:
            yield NullCascade(cascade)

    cascade_module.Cascade.load = null_load  # type: ignore[method-assign,assignment]
    serve(args.bundle, host=args.host, port=args.port, input_dtype=args.input_dtype,
          on_ready=lambda info: print(f"null model ready on {info.host}:{info.http_port}", flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
