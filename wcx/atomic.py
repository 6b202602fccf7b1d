"""Atomic writes: a file or a whole directory appears complete or not at all.

Everything is first written next to its destination (same file system, so a rename is atomic)
under a hidden staging name, then renamed into place. On any exception the staging copy is
removed and the destination is left as it was.

Staging names carry the writer's process id, ``.<name>.<pid>-<random>.tmp`` (and ``.old`` for a
directory moved aside), so that a later write can tell the leftovers of a process that was
killed from the work of a live one: leftovers of dead processes are removed on the next write
(:func:`clean_staging`).

Replacing a directory (``atomic_directory(..., overwrite=True)``) exchanges the old and the new
directory in one step where the OS can (Linux ``renameat2(RENAME_EXCHANGE)``); a reader sees the
old directory or the new one, and an interruption at any point leaves one of them at the path.
Elsewhere it takes two renames (old aside, new into place); an interruption between them leaves
no directory at the path but the old one under its ``.old`` name, which the next load or write
puts back (:func:`recover`).

Writing errors of the operating system (a full disk, a read-only file system, no permission)
become :class:`~wcx.errors.WriteFailedError` (exit 1) with nothing half-written; a destination
that cannot be a file (a directory, a path under a file) is a :class:`~wcx.errors.BadInputError`
(exit 2) raised before anything is written.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from wcx.errors import BadInputError, WriteFailedError

#: errno values that mean "this write cannot be done here" (the work failed, exit 1)
_WRITE_ERRORS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EFBIG", "ETXTBSY")
    if hasattr(errno, name)
)
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.(?P<kind>tmp|old)$")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


# -------------------------------------------------------------------------------------------
# staging names, leftovers and recovery
# -------------------------------------------------------------------------------------------
def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return True  # cannot tell: leave its files alone
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def staging_leftovers(path: str | Path) -> list[Path]:
    """Staging files and directories of ``path`` left by processes that no longer run."""
    path = Path(path)
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    out = []
    for entry in entries:
        m = _STAGING.match(entry.name)
        if m and m.group("name") == path.name and not _process_alive(int(m.group("pid"))):
            out.append(path.parent / entry.name)
    return sorted(out)


def recover(path: str | Path) -> Path | None:
    """Put back a directory an interrupted replacement left under its ``.old`` name (only when
    nothing is at ``path``); returns it, or None. Leftovers of live processes are not touched."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        return None
    olds = [p for p in staging_leftovers(path) if p.name.endswith(".old") and p.is_dir()]
    if not olds:
        return None
    newest = max(olds, key=lambda p: p.stat().st_mtime_ns)
    try:
        os.rename(newest, path)
    except OSError:
        return None
    return path


def clean_staging(path: str | Path) -> None:
    """Recover ``path`` if an interrupted replacement lost it, then remove the staging leftovers
    of processes that no longer run (hidden ``.<name>.<pid>-*.tmp`` / ``.old`` next to it)."""
    recover(path)
    for leftover in staging_leftovers(path):
        _remove(leftover)


# -------------------------------------------------------------------------------------------
# errors
# -------------------------------------------------------------------------------------------
def check_output_file(path: str | Path, *, what: str = "output") -> Path:
    """Refuse (``BadInputError``, before any work) a file destination that cannot be one: an
    existing directory, or a path under an existing file."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{path}: is a directory; the {what} must be a file path")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise BadInputError(f"{path}: {parent} is not a directory")
            break
    return path


def _write_failed(exc: OSError, path: Path) -> WriteFailedError:
    reason = exc.strerror or str(exc)
    return WriteFailedError(f"could not write {path}: {reason}; nothing was written", exc.errno)


def _is_write_error(exc: OSError, *places: Path) -> bool:
    if exc.errno not in _WRITE_ERRORS:
        return False
    if exc.filename is None:
        return True  # a write to an open file handle
    name = Path(os.fsdecode(exc.filename)).absolute()
    return any(name == p or p in name.parents for p in (q.absolute() for q in places))


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mkdir_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BadInputError(f"{path}: a part of {path.parent} is a file, not a directory") from None


# -------------------------------------------------------------------------------------------
# files
# -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    ``BadInputError`` before anything is written when ``path`` is a directory or lies under a
    file; ``WriteFailedError`` when the system refuses the write (nothing is left behind)."""
    path = check_output_file(path)
    _mkdir_parent(path)
    try:
        clean_staging(path)
        fd, tmp_name = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if _is_write_error(exc, path.parent):
            raise _write_failed(exc, path) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if _is_write_error(exc, path, tmp, path.parent):
            raise _write_failed(exc, path) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: object) -> None:
    """Write ``data`` as indented strict JSON atomically (numpy values, tuples and paths
    allowed; non-finite numbers become null: :mod:`wcx.json_values`)."""
    from wcx.json_values import dumps

    write_text_atomic(path, dumps(data) + "\n")


# -------------------------------------------------------------------------------------------
# directories
# -------------------------------------------------------------------------------------------
def _staging_directory(path: Path) -> Path:
    """A new, empty directory next to ``path`` under a staging name of this process."""
    try:
        return Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        if _is_write_error(exc, path.parent):
            raise _write_failed(exc, path) from exc
        raise


@contextlib.contextmanager
def scratch_directory(path: str | Path) -> Iterator[Path]:
    """A temporary working directory next to ``path`` for work that ends in writing ``path``,
    removed afterwards; named like a staging copy, so one left by a killed process is removed by
    the next write."""
    path = Path(path)
    _mkdir_parent(path)
    clean_staging(path)
    scratch = _staging_directory(path)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None  # glibc before 2.28, or another C library
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2()


def exchange(a: str | Path, b: str | Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or file system cannot
    (then nothing happened)."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(os.path.abspath(a)), _AT_FDCWD, os.fsencode(os.path.abspath(b)),
                    _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a file system without exchange
    raise OSError(err, os.strerror(err), str(b))


def _replace_directory(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest`` (an existing directory), removing the old one."""
    if exchange(new, dest):
        # ``new`` now holds the old directory; if this process dies here it is a leftover of a
        # dead process, removed by the next write.
        shutil.rmtree(new, ignore_errors=True)
        return
    old = dest.parent / f"{_prefix(dest)}{secrets.token_hex(4)}.old"
    os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(
    path: str | Path, *, overwrite: bool = False, check_replace: Callable[[Path], None] | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success it becomes ``path``.

    Without ``overwrite`` an existing ``path`` is an error raised before anything is written.
    With it, ``check_replace(path)`` (when given) decides whether the existing path may be
    replaced (it raises otherwise), and the old directory is exchanged for the new one (see the
    module docstring), so a reader never sees a mix of old and new files.
    """
    path = Path(path)
    _mkdir_parent(path)
    clean_staging(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists")
        if check_replace is not None:
            check_replace(path)
    tmp = _staging_directory(path)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        yield tmp
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{path} appeared while it was being written")
            _replace_directory(tmp, path)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        if _is_write_error(exc, path, tmp, path.parent):
            raise _write_failed(exc, path) from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
