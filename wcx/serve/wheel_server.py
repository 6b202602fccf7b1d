"""Run a model repository on the ``tritonserver`` binary that PyTriton's wheel carries.

That server (Triton 2.51) has the Python backend only, so it runs repositories whose members
are Python-backend models (``wcx export-triton --members python``): a way to try an exported
cascade, and to test it, without Triton's container. The ``onnxruntime_onnx`` and
``tensorrt_plan`` repositories need Triton's container (README, "Serving with Triton").

What PyTriton arranges for its own models is arranged here too: a backend directory holding the
Python backend with the stub built for this interpreter's Python version; ``LD_LIBRARY_PATH`` with
this interpreter's ``libpython`` first (else the stub links the system one) and the wheel's
libraries; ``PATH`` with this environment's ``bin`` first, so the stub's Python is this
environment (with wcx, ONNX Runtime and numpy<2).

    python -m wcx.serve.wheel_server REPO --port 8000 --workdir DIR

replaces itself by the server (its PID is the server's: SIGTERM stops it gracefully).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from wcx.serve.server import check_serving_environment, stub_library_path

__all__ = ["server_command", "main"]


def server_command(repository: str | Path, workdir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
                   grpc_port: int | None = None, metrics_port: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``tritonserver`` command line and environment that serve ``repository`` (HTTP
    ``port``, gRPC ``port + 1``, metrics ``port + 2`` unless given), with its backend directory
    set up under ``workdir``."""
    check_serving_environment()
    import pytriton

    dist = Path(pytriton.__file__).parent / "tritonserver"
    libs = dist.parent.parent / "nvidia_pytriton.libs"
    backend = Path(workdir) / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, backend / item.name)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    shutil.copy2(dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                 backend / "triton_python_backend_stub")
    env = dict(os.environ)
    library_path = stub_library_path(env) or env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (library_path, str(libs)) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    grpc_port = port + 1 if grpc_port is None else grpc_port
    metrics_port = port + 2 if metrics_port is None else metrics_port
    command = [str(dist / "bin" / "tritonserver"), "--model-repository", str(Path(repository).resolve()),
               "--backend-directory", str(backend.parent), "--http-address", host, "--http-port", str(port),
               "--grpc-address", host, "--grpc-port", str(grpc_port), "--metrics-address", host,
               "--metrics-port", str(metrics_port), "--allow-gpu-metrics", "false", "--exit-timeout-secs", "5"]
    return command, env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wcx.serve.wheel_server", description=__doc__.split("\n")[0])
    parser.add_argument("repository")
    parser.add_argument("--workdir", required=True, help="folder for the server's backend directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    command, env = server_command(args.repository, args.workdir, host=args.host, port=args.port)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
