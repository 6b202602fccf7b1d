"""Exceptions raised by wcx.

The library raises; only the CLI prints and exits. Each exception carries the CLI exit code it
maps to (method.md section 7):

* ``BadInputError`` -> exit 2: bad input or options (a missing or corrupt file, bad values, data
  too small, an engine built for another GPU or TensorRT version, a missing optional dependency).
* ``WorkFailedError`` -> exit 1: the work itself failed or could not deliver what was asked (a
  parity check failed, no certificate, an engine build failed).
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


class NotFittedError(WcxError, AttributeError):
    """A fitted object was used before ``fit`` (exit 1)."""


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the standard error for an optional dependency that is not installed."""
    return MissingDependencyError(
        f"{purpose} needs '{package}', which is not installed: "
        f"pip install 'wcx[{extra}]'"
    )
