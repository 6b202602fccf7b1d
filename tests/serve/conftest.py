"""The serving environment the loopback tests start servers in, and free loopback ports.

PyTriton pins numpy<2, so the server runs in its own virtual environment (the ``serve`` extra):
``WCX_SERVE_PYTHON`` names its interpreter, else ``.venv-serve/bin/python`` in the checkout
(what ``.ci/run`` builds). The tests skip, saying why, when neither can import PyTriton.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def serve_python() -> str | None:
    """The serving environment's interpreter, or None when there is none that imports PyTriton."""
    candidate = os.environ.get("WCX_SERVE_PYTHON") or str(ROOT / ".venv-serve" / "bin" / "python")
    if not Path(candidate).exists():
        return None
    res = subprocess.run([candidate, "-c", "import pytriton.triton, wcx"], capture_output=True, timeout=60)
    return candidate if res.returncode == 0 else None


@pytest.fixture(scope="session")
def server_python() -> str:
    python = serve_python()
    if python is None:
        pytest.skip("no serving environment: install the serve extra in .venv-serve (python3 -m venv .venv-serve "
                    "&& .venv-serve/bin/pip install -e '.[serve]') or set WCX_SERVE_PYTHON")
    return python


def free_ports(n: int) -> int:
    """A loopback port p with p, p+1, ..., p+n-1 free (the server takes consecutive ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            held = []
            for p in range(base, base + n):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("no run of free loopback ports")
