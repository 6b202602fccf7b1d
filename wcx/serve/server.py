"""``wcx serve``: a calibrated cascade behind NVIDIA Triton Inference Server, through PyTriton.

The cascade (:class:`~wcx.runtime.cascade.Cascade`) is loaded once, in this process; PyTriton
starts the ``tritonserver`` binary its wheel carries and binds one model to it, whose requests
Triton's dynamic batcher merges (up to ``max_batch`` rows, waiting at most
``max_queue_delay_us``) before this process runs the cascade once on the merged batch. Clients
speak KServe v2 over HTTP (``port``) or gRPC (``grpc_port``); Triton answers readiness and
health (``/v2/health/ready``) and its own metrics (``metrics_port``); wcx's per-stage figures
(:mod:`wcx.serve.metrics`) are served at ``http://host:wcx_metrics_port/metrics``, because
PyTriton gives the process that runs the model no handle on Triton's metrics registry.

Errors: a request with another shape or dtype is refused by Triton before it reaches the
cascade; one with floats outside the input contract is refused here. PyTriton answers a merged
batch as a whole, so the requests merged with a bad one get its error too (each names the bad
request); the server keeps serving. SIGTERM (and SIGINT) stop the server gracefully.

Environment: PyTriton 0.7 (Triton 2.51) needs numpy < 2 in the Python that serves: with numpy 2
its Python backend returns empty tensors. Install the ``serve`` extra in its own virtual
environment (README, "Serving with Triton"). The backend's stub process links the system
``libpython`` unless ``LD_LIBRARY_PATH`` names the running interpreter's library directory first,
which :func:`serve` arranges.
"""

from __future__ import annotations

import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wcx.errors import BadInputError, WorkFailedError, missing_dependency
from wcx.serve.contract import INPUT_NAME, ServingContract
from wcx.serve.metrics import ServeMetrics, start_metrics_server
from wcx.serve.requests import answer_checked

__all__ = ["AlarmLog", "ServerInfo", "serve", "stub_library_path", "check_serving_environment"]

MODEL_NAME = "wcx_cascade"


@dataclass(frozen=True)
class ServerInfo:
    """Where a started server listens, for the caller to announce."""

    model_name: str
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    wcx_metrics_port: int
    input_dtype: str
    sample_shape: tuple[int, ...]
    max_batch: int
    backend: str


def check_serving_environment() -> Any:
    """Import PyTriton, or raise a ``MissingDependencyError`` naming the ``serve`` extra; refuse
    numpy 2 (Triton 2.51's Python backend returns empty tensors with it)."""
    try:
        import pytriton.triton as triton
    except ImportError:
        raise missing_dependency("nvidia-pytriton", "serve", "wcx serve (in its own virtual environment: "
                                 "PyTriton pins numpy<2)") from None
    if int(np.__version__.split(".")[0]) >= 2:
        raise BadInputError(f"wcx serve: numpy {np.__version__} is installed with PyTriton, whose Triton Python "
                            "backend returns empty tensors with numpy 2: install the serve extra in its own "
                            "virtual environment, where pip keeps numpy<2")
    return triton


def stub_library_path(environ: Mapping[str, str] | None = None) -> str | None:
    """``LD_LIBRARY_PATH`` with this interpreter's library directory first, or None when it has
    no shared ``libpython`` there (then the stub's own lookup is left alone)."""
    if environ is None:
        environ = os.environ
    libdir = sysconfig.get_config_var("LIBDIR")
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    if not libdir or not name.endswith(".so") and ".so." not in name or not (Path(libdir) / name).exists():
        return None
    rest = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
    return os.pathsep.join([libdir, *rest])


def make_infer(cascade: Any, contract: ServingContract, metrics: ServeMetrics) -> Callable[[list[Any]], list[Any]]:
    """The function PyTriton calls with the requests of one dynamic batch
    (:func:`~wcx.serve.requests.answer_checked`). PyTriton answers a batch as a whole, so a bad
    request fails the batch, with its message."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        xs = [r.data.get(INPUT_NAME) for r in requests]
        good = []
        for i, x in enumerate(xs):
            try:
                good.append(contract.check_request(x, where=f"request {i + 1} of {len(xs)}"))
            except BadInputError:
                metrics.record_failure(len(xs))  # every request of this batch gets the error
                raise
        return answer_checked(cascade, contract, good, metrics=metrics)  # checked once, here

    return infer


def serve(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    wcx_metrics_port: int | None = None,
    max_batch: int = 256,
    max_queue_delay_us: int = 100,
    input_dtype: str | None = None,
    probs: bool = False,
    backend: str = "auto",
    threads: int | None = None,
    strict: bool = False,
    monitor: bool = False,
    alpha: float = 0.01,
    on_ready: Callable[[ServerInfo], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Serve the calibrated cascade of ``bundle`` until SIGTERM/SIGINT (or ``stop`` is set);
    return the final :meth:`ServeMetrics.snapshot`.

    Ports: HTTP ``port``; gRPC ``grpc_port`` (default ``port + 1``); Triton's metrics
    ``metrics_port`` (``port + 2``); wcx's metrics ``wcx_metrics_port`` (``port + 3``).
    ``max_batch``: the most rows Triton merges into one cascade call (and the most one request
    may send); ``max_queue_delay_us``: how long it waits for more requests to merge.
    ``monitor``: watch every served row with the calibration's drift
    :class:`~wcx.runtime.monitor.Monitor` at false-alarm level ``alpha``: alarms go to the log
    (stderr) and to wcx's metrics endpoint (``/metrics`` counts, ``/monitor`` the status).
    """
    if max_batch < 1:
        raise BadInputError(f"max_batch={max_batch}: must be at least 1")
    if max_queue_delay_us < 0:
        raise BadInputError(f"max_queue_delay_us={max_queue_delay_us}: must be >= 0")
    check_serving_environment()
    watch = None
    if monitor:  # before the server starts: a bundle without reference rates is refused here
        from wcx.runtime.monitor import Monitor

        watch = Monitor.for_bundle(bundle, alpha=alpha)
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from wcx.runtime.cascade import Cascade

    grpc_port = port + 1 if grpc_port is None else grpc_port
    metrics_port = port + 2 if metrics_port is None else metrics_port
    wcx_metrics_port = port + 3 if wcx_metrics_port is None else wcx_metrics_port
    library_path = stub_library_path()
    if library_path is not None:
        # read by the tritonserver process PyTriton starts, and so by its Python backend stub
        os.environ["LD_LIBRARY_PATH"] = library_path

    with Cascade.load(bundle, backend=backend, threads=threads, strict=strict) as cascade:
        contract = ServingContract.for_cascade(cascade, input_dtype=input_dtype, probs=probs)
        metrics = ServeMetrics(cascade.n_stages, monitor=watch)
        if watch is not None:
            cascade.attach(AlarmLog(watch))
        config = TritonConfig(http_address=host, http_port=port, grpc_address=host, grpc_port=grpc_port,
                              metrics_address=host, metrics_port=metrics_port, allow_gpu_metrics=False,
                              exit_timeout_secs=5, log_verbose=0)
        metrics_server = start_metrics_server(metrics, host, wcx_metrics_port)
        previous = _stop_on_sigterm()
        try:
            with Triton(config=config) as triton:
                triton.bind(
                    model_name=MODEL_NAME,
                    infer_func=make_infer(cascade, contract, metrics),
                    inputs=[Tensor(name=s.name, dtype=s.dtype.type, shape=s.shape) for s in contract.inputs],
                    outputs=[Tensor(name=s.name, dtype=s.dtype.type, shape=s.shape) for s in contract.outputs],
                    config=ModelConfig(max_batch_size=max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)),
                    strict=True,
                )
                triton.run()
                if on_ready is not None:
                    on_ready(ServerInfo(MODEL_NAME, host, port, grpc_port, metrics_port, wcx_metrics_port,
                                        contract.input_dtype, contract.sample_shape, max_batch, cascade.backend))
                if not _wait(triton, stop):
                    raise WorkFailedError("wcx serve: the Triton server stopped on its own (see its log above)")
        except KeyboardInterrupt:
            pass  # SIGTERM or SIGINT: leaving the block stops the server
        finally:
            _restore(previous)
            metrics_server.shutdown()
            metrics_server.server_close()
        return metrics.snapshot()


class AlarmLog:
    """A cascade observer that feeds a monitor and writes each alarm it raises to stderr, once."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def observe(self, out: Any) -> None:
        for alarm in self.monitor.observe(out):
            print(f"wcx serve: {alarm.message()}", file=sys.stderr, flush=True)


def _wait(triton: Any, stop: threading.Event | None) -> bool:
    """Block until ``stop`` is set (True), the server dies (False) or a signal arrives
    (KeyboardInterrupt)."""
    while triton.is_alive():
        if stop is not None and stop.wait(0.5):
            return True
        if stop is None:
            time.sleep(0.5)
    return False


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt (the way SIGINT already stops); only the main thread
    may install signal handlers, elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
