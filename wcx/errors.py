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


class UsageError(RuntimeError):
    """The library was used in a way it does not support (a programming error; no exit code)."""


class NotFittedError(UsageError, AttributeError):
    """A fitted object was used before ``fit``."""


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the standard error for an optional dependency that is not installed."""
    return MissingDependencyError(
        f"{purpose} needs '{package}', which is not installed: "
        f"pip install 'wcx[{extra}]'"
    )
