"""What a served cascade reports: per-stage pass fractions, the accept rate and latency
percentiles, in Prometheus' text format.

Conventions: counters count rows since the server started (``wcx_stage_rows_total{stage="m"}``:
rows that reached stage m, 1-based; stage 1 sees every row); the pass fraction of stage m is
``stage_rows[m] / rows`` (method.md section 5); the accept rate is ``accepted / rows``. Latency
quantiles (``wcx_batch_seconds``: one cascade call on one dynamic batch, from the host clock;
``wcx_stage_seconds{stage="m"}``: that stage's share of it) are order statistics (the
``ceil(q * n)``-th smallest) over the last :data:`WINDOW` calls, so they follow the current load
rather than the whole life of the server. With a drift monitor (``wcx serve --monitor``):
``wcx_monitor_inputs_total``, ``wcx_drift_alarms`` (how many statistics alarmed) and
``wcx_drift_alarm{statistic="..."}`` (1 each); ``GET /monitor`` gives the monitor's status as
JSON, every alarm with its message (what moved, since when, what to do).
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wcx.json_values import json_safe

__all__ = ["WINDOW", "QUANTILES", "ServeMetrics", "start_metrics_server"]

#: calls the latency quantiles are computed over
WINDOW = 1000
QUANTILES = (0.5, 0.9, 0.99)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``ceil(q * n)``-th smallest of ``values`` (NaN when empty).

    >>> quantile([4.0, 1.0, 3.0, 2.0], 0.5)
    2.0
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class ServeMetrics:
    """Counters and recent latencies of a served cascade; thread-safe."""

    def __init__(self, n_stages: int, *, window: int = WINDOW, monitor: Any = None) -> None:
        """``monitor``: a drift :class:`~wcx.runtime.monitor.Monitor` watching the served
        cascade, whose alarms the figures then include (None: no monitoring)."""
        self.n_stages = int(n_stages)
        self.monitor = monitor
        self._lock = threading.Lock()
        self.requests = 0
        self.failed_requests = 0
        self.rows = 0
        self.accepted = 0
        self.stage_rows = [0] * self.n_stages
        self._batch_seconds: deque[float] = deque(maxlen=window)
        self._stage_seconds: list[deque[float]] = [deque(maxlen=window) for _ in range(self.n_stages)]

    def record(self, *, requests: int, exit_stage: Any, accept: Any, seconds: float,
               stage_seconds: Sequence[float] | None = None) -> None:
        """Count one cascade call on a batch of ``requests`` requests (its rows' exit stages and
        accepts, numpy arrays) that took ``seconds``."""
        reached = [int((exit_stage >= m).sum()) for m in range(1, self.n_stages + 1)]
        with self._lock:
            self.requests += requests
            self.rows += int(exit_stage.shape[0])
            self.accepted += int(accept.sum())
            self.stage_rows = [a + b for a, b in zip(self.stage_rows, reached, strict=True)]
            self._batch_seconds.append(float(seconds))
            for m, s in enumerate(stage_seconds or ()):
                if reached[m]:
                    self._stage_seconds[m].append(float(s))

    def record_failure(self, requests: int) -> None:
        """Count ``requests`` requests answered with an error."""
        with self._lock:
            self.failed_requests += requests

    def snapshot(self) -> dict[str, Any]:
        """The current figures as plain values (pass fractions and accept rate None before the
        first row), and the monitor's status (None without one)."""
        return {**self._figures(), "monitor": None if self.monitor is None else self.monitor.status()}

    def _figures(self) -> dict[str, Any]:
        with self._lock:
            rows = self.rows
            return {
                "requests": self.requests, "failed_requests": self.failed_requests, "rows": rows,
                "accepted": self.accepted, "stage_rows": list(self.stage_rows),
                "pass_fraction": [r / rows for r in self.stage_rows] if rows else None,
                "accept_rate": self.accepted / rows if rows else None,
                "batch_seconds": {q: quantile(list(self._batch_seconds), q) for q in QUANTILES},
                "stage_seconds": [{q: quantile(list(s), q) for q in QUANTILES} for s in self._stage_seconds],
            }

    def prometheus(self) -> str:
        """The figures in Prometheus' text exposition format (version 0.0.4)."""
        s = self._figures()
        lines: list[str] = []

        def family(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {_number(v)}" for labels, v in samples)

        family("wcx_requests_total", "counter", "Requests answered.", [("", s["requests"])])
        family("wcx_requests_failed_total", "counter", "Requests answered with an error.",
               [("", s["failed_requests"])])
        family("wcx_rows_total", "counter", "Rows answered.", [("", s["rows"])])
        family("wcx_accepted_rows_total", "counter", "Rows accepted (score >= tau).", [("", s["accepted"])])
        family("wcx_stage_rows_total", "counter", "Rows that reached each stage (1-based).",
               [(f'{{stage="{m + 1}"}}', r) for m, r in enumerate(s["stage_rows"])])
        if s["rows"]:
            family("wcx_stage_pass_fraction", "gauge", "Fraction of all rows that reached each stage.",
                   [(f'{{stage="{m + 1}"}}', p) for m, p in enumerate(s["pass_fraction"])])
            family("wcx_accept_rate", "gauge", "Fraction of all rows accepted.", [("", s["accept_rate"])])
        family("wcx_batch_seconds", "summary", f"Seconds per cascade call, over the last {WINDOW} calls.",
               [(f'{{quantile="{q}"}}', v) for q, v in s["batch_seconds"].items()])
        family("wcx_stage_seconds", "summary", f"Seconds per stage of a cascade call, over the last {WINDOW} "
               "calls that ran it.",
               [(f'{{stage="{m + 1}",quantile="{q}"}}', v)
                for m, per in enumerate(s["stage_seconds"]) for q, v in per.items()])
        if self.monitor is not None:
            family("wcx_monitor_inputs_total", "counter", "Inputs the drift monitor has observed.",
                   [("", self.monitor.n_seen)])
            drift = [a for a in self.monitor.alarms if a.kind == "drift"]
            family("wcx_drift_alarms", "gauge", "Drift alarms raised (GET /monitor for what moved and what to do).",
                   [("", len(drift))])
            if drift:
                family("wcx_drift_alarm", "gauge", "1 for every statistic whose drift alarm was raised.",
                       [(f'{{statistic="{_label(a.statistic)}"}}', 1) for a in drift])
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def start_metrics_server(metrics: ServeMetrics, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``metrics`` at ``http://host:port/metrics`` (and, with a monitor, its status as JSON
    at ``/monitor``) from a daemon thread; ``shutdown()`` the returned server to stop it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind = metrics.prometheus().encode(), "text/plain; version=0.0.4"
            elif path == "/monitor" and metrics.monitor is not None:
                body, kind = json.dumps(json_safe(metrics.monitor.status())).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # scrapes are not worth a log line each

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="wcx-metrics", daemon=True).start()
    return server
