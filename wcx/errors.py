"""Exceptions raised by wcx.

The library raises; only the CLI prints and exits. Each exception carries the CLI exit code it
maps to (method.md section 7):

* ``BadInputError`` -> exit 2: bad input or options (a missing or corrupt file, bad values, data
  too small, an engine built for another GPU or TensorRT version, a missing optional dependency).
* ``WorkFailedError`` -> exit 1: the work itself failed or could not deliver what was asked (a
  parity check failed, no certificate, an engine build failed, a backend failed on valid input).

``UsageError`` is different: the library was called in a way it does not support (a runner used
before ``activate``, a closed cascade, an attribute read before ``fit``). That is a bug in the
calling code, not a condition of the data, so it is not a ``WcxError`` and has no exit code.
"""

from __future__ import annotations


class WcxError(Exception):
    """Base class of every error wcx raises on purpose; ``exit_code`` is the CLI's exit code."""

    exit_code: int = 1


class BadInputError(WcxError, ValueError):
    """Bad input or options: a missing or corrupt file, a bad value, data too small (exit 2)."""

    exit_code = 2


class MissingDependencyError(BadInputError, ImportError):
    """An optional dependency (torch, tensorrt, a GPU) is not available (exit 2).

    The message names what is missing and the pip extra (or other way) to install it.
    """


class WorkFailedError(WcxError, RuntimeError):
    """The work itself failed or could not deliver what was asked (exit 1)."""


class InsufficientDataError(BadInputError):
    """Too little data for what was asked, e.g. a certificate (exit 2).

    ``report`` holds what a caller can still write out for scripts to read (``n_needed``: the
    inputs that would be needed, ``n``: the inputs given, and the settings that decided it).
    """

    def __init__(self, message: str, report: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.report: dict[str, object] = dict(report or {})


class WriteFailedError(WorkFailedError):
    """Writing a result failed (a full disk, a read-only file system, no permission) (exit 1).

    Nothing half-written is left at the destination; ``errno`` is the operating system's code.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class UsageError(RuntimeError):
    """The library was used in a way it does not support (a programming error; no exit code)."""


class NotFittedError(UsageError, AttributeError):
    """A fitted object was used before ``fit``."""


#: wcx's distribution name (the import and the command stay ``wcx``: PyPI's ``wcx`` is another
#: project). Until it is published, extras are installed from a checkout or a built wheel.
DISTRIBUTION = "wcx-cascade"
#: extras that pull torch: a CPU-only machine must pin the CPU build or pip fetches a CUDA one
_TORCH_EXTRAS = frozenset({"export", "torch", "test"})
CPU_TORCH_PIN = "torch==2.13.0"


def install_hint(extra: str) -> str:
    """How to install wcx with ``extra``: from the checkout or the built wheel, never a bare name
    from PyPI; with the CPU torch pin where the extra needs torch."""
    torch = f"{CPU_TORCH_PIN} " if extra in _TORCH_EXTRAS else ""
    wheel = DISTRIBUTION.replace("-", "_")
    hint = (f"pip install {torch}-e \".[{extra}]\" in a wcx checkout (or the built wheel: "
            f"pip install {torch}\"dist/{wheel}-<version>-py3-none-any.whl[{extra}]\")")
    if torch:
        hint += f"; {CPU_TORCH_PIN} is the CPU build, on a GPU machine install torch for your CUDA instead"
    return hint


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the standard error for an optional dependency that is not installed."""
    return MissingDependencyError(f"{purpose} needs '{package}', which is not installed: {install_hint(extra)}")
