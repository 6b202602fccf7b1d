"""The cascade bundle: one directory with everything a deployment needs.

Layout::

    BUNDLE/
      wcx.json              the manifest (versioned, human-readable JSON; wcx.core.manifest)
      members/<name>.onnx   one ONNX graph per member, stage 1 first
      ...                   other files the manifest refers to (weights, engines, caches)

Every file the manifest refers to is named by a JSON object with the keys ``file`` (a path
relative to the bundle) and ``sha256``; loading walks the whole manifest, finds those objects and
checks that each file exists and has that hash, so a section added later is covered without new
code here. A named file without a hash is refused. Files outside the bundle directory are never
read: a path that leaves it (absolute, ``..``) or passes through a symbolic link inside it (a
file or a directory, e.g. ``members/`` linked elsewhere) is refused; the bundle's own directory
may be reached through a link. :meth:`Bundle.digest` is one hash of the manifest and every file
it names, for a deployer to pin.

What this protects against: damaged, truncated or swapped files and accidents (a wrong file
copied in, a link left behind). What it does not: the manifest is not signed, so whoever can
write the bundle can write a matching manifest; and a member's ``torch_source`` names Python
code that the torch backend imports. Only load bundles you trust (or whose digest you pinned).

Replacing a bundle (``overwrite=True``) only ever replaces a directory that holds a wcx bundle;
anything else at the path is refused and left untouched. Writes are atomic (:mod:`wcx.atomic`).

The manifest's format, its validation and the migration of older versions are
:mod:`wcx.core.manifest`'s business; this module reads and writes it, checks the files, and
replaces sections atomically.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from wcx.atomic import atomic_directory, clean_staging, recover, write_text_atomic
from wcx.core.manifest import (
    SCHEMA_VERSION,
    CalibrationSection,
    EnginesSection,
    InputSection,
    Manifest,
    MemberSection,
    PolicySection,
    file_references,
)
from wcx.errors import BadInputError
from wcx.file_hash import sha256_file

MANIFEST_NAME = "wcx.json"

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "Bundle", "check_replaceable", "select_members", "sha256_file",
           "write_bundle"]


def _inside(root: Path, rel: str, *, where: str) -> Path:
    """Resolve ``rel`` under ``root``, refusing absolute paths, ``..`` escapes and symbolic links
    anywhere below ``root`` (files and directories alike; ``root`` itself may be one)."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BadInputError(f"{where}: file path {rel!r} points outside the bundle")
    current = root
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise BadInputError(f"{where}: {current.relative_to(root)} is a symbolic link; a bundle's files and "
                                "folders must be inside it, not links")
    if current.exists():
        try:
            current.resolve().relative_to(root.resolve())
        except ValueError:
            raise BadInputError(f"{where}: file path {rel!r} resolves outside the bundle") from None
    return current


def check_replaceable(path: str | Path) -> None:
    """Refuse (``BadInputError``) to replace ``path`` unless it is a directory holding a wcx
    bundle (a manifest that reads); anything else is left untouched."""
    path = Path(path)
    if path.is_symlink():
        raise BadInputError(f"{path} is a symbolic link; refusing to replace it (give the directory itself)")
    if not path.is_dir():
        raise BadInputError(f"{path} exists and is not a wcx bundle directory; refusing to replace it")
    try:
        Bundle.load(path, verify=False)
    except BadInputError as exc:
        raise BadInputError(f"{path} exists and is not a valid wcx bundle ({exc}); refusing to replace it: remove "
                            "it yourself or choose another path") from None


class Bundle:
    """A loaded, verified cascade bundle: its directory and its typed :class:`Manifest`.

    ``members`` are in stage order. Sections written later (``policy``, ``calibration``,
    ``engines``) are replaced with :meth:`update_sections`.
    """

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Bundle:
        """Read ``path/wcx.json`` and (with ``verify``) check every referenced file's sha256.

        Raises ``BadInputError`` with a one-line message for a missing directory or manifest,
        corrupt JSON, an unknown ``schema_version``, an invalid section, a missing or altered
        file, or members that disagree on input shape or preprocessing.
        """
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not root.exists():
            recover(root)  # an interrupted replacement left it under its staging name
        if not root.is_dir():
            raise BadInputError(f"{root}: no such bundle directory")
        if not manifest_path.is_file():
            raise BadInputError(f"{root}: not a wcx bundle (no {MANIFEST_NAME})")
        _inside(root, MANIFEST_NAME, where=str(root))
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInputError(f"{manifest_path}: corrupt manifest ({exc})") from None
        except OSError as exc:
            raise BadInputError(f"{manifest_path}: cannot read the manifest ({exc.strerror})") from None
        bundle = cls(root, Manifest.from_dict(raw, where=str(manifest_path)))
        if verify:
            bundle.verify_files()
        return bundle

    def verify_files(self) -> dict[str, str]:
        """Check that every file the manifest names is a regular file inside the bundle (no
        link on the way) with its sha256; returns ``{file: sha256}``."""
        hashes: dict[str, str] = {}
        for rel, expected in file_references(self.manifest.to_dict(), where=str(self.path)):
            file = _inside(self.path, rel, where=str(self.path))
            if not file.is_file():
                raise BadInputError(f"{self.path}: file {rel} is missing from the bundle")
            try:
                actual = sha256_file(file, follow_links=False)
            except OSError as exc:
                raise BadInputError(f"{self.path}: file {rel} cannot be read ({exc.strerror})") from None
            if actual != expected:
                raise BadInputError(
                    f"{self.path}: file {rel} was altered (sha256 {actual[:12]}..., "
                    f"manifest says {expected[:12]}...)"
                )
            hashes[rel] = actual
        return hashes

    def digest(self) -> str:
        """One hash of the whole bundle as it is on disk: the manifest's bytes and every file it
        names (verified). Equal digests mean the same bundle; pin it to deploy exactly this one.
        Calibrating or building engines rewrites the manifest, so the digest changes then."""
        manifest = _inside(self.path, MANIFEST_NAME, where=str(self.path))
        hashes = self.verify_files()
        h = hashlib.sha256(b"wcx bundle digest 1\n")
        h.update(sha256_file(manifest, follow_links=False).encode())
        for rel in sorted(hashes):
            h.update(f"\n{rel}\0{hashes[rel]}".encode())
        return "sha256:" + h.hexdigest()

    def file(self, rel: str) -> Path:
        """Absolute path of a file inside the bundle (refuses paths that leave it)."""
        return _inside(self.path, rel, where=str(self.path))

    def member_path(self, index: int) -> Path:
        return self.file(self.members[index].file)

    def member_indices(self, names: Sequence[str]) -> list[int]:
        """Stage indices of the members ``names`` (in the order given); unknown names or an
        empty selection are a ``BadInputError`` that lists the bundle's members."""
        known = [m.name for m in self.members]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BadInputError(
                f"{self.path}: no member named {', '.join(unknown)} (members: {', '.join(known)})"
            )
        if not names:
            raise BadInputError("select at least one member")
        return [known.index(n) for n in names]

    # -- views ---------------------------------------------------------------------------------
    @property
    def members(self) -> tuple[MemberSection, ...]:
        return self.manifest.members

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.members[0].sample_shape

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def input(self) -> InputSection:
        """The members' shared input section (stage 1's)."""
        return self.manifest.input

    @property
    def member_macs(self) -> list[int]:
        return [m.macs for m in self.members]

    @property
    def policy(self) -> PolicySection | None:
        return self.manifest.policy

    @property
    def calibration(self) -> CalibrationSection | None:
        return self.manifest.calibration

    @property
    def engines(self) -> EnginesSection | None:
        return self.manifest.engines

    # -- writing -------------------------------------------------------------------------------
    def update_sections(self, **sections: Any) -> None:
        """Replace ``policy``, ``calibration``, ``engines`` atomically: typed sections, their
        JSON form, or None. The new manifest is validated before anything is written."""
        updated = self.manifest.with_sections(**sections)
        write_manifest(self.path, updated)
        self.manifest = updated


def write_manifest(root: str | Path, manifest: Manifest) -> None:
    """Write ``root/wcx.json`` atomically (sorted keys off: the section order reads best)."""
    write_text_atomic(Path(root) / MANIFEST_NAME, json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n")


def new_manifest(members: Sequence[MemberSection], export: Mapping[str, Any]) -> Manifest:
    """A fresh manifest for ``members`` (no policy, calibration or engines yet)."""
    return Manifest(members=tuple(members), export=dict(export),
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def write_bundle(
    path: str | Path,
    members: Sequence[tuple[MemberSection, Path]],
    export: Mapping[str, Any],
    *,
    extra_files: Sequence[tuple[str, Path]] = (),
    overwrite: bool = False,
    sections: Mapping[str, Any] | None = None,
) -> Bundle:
    """Create a bundle directory atomically from already-built member files.

    ``members`` pairs each section (whose ``file`` is the path inside the bundle) with the file to
    copy there; ``sha256`` is recomputed from the copy. ``extra_files`` are ``(rel, source)``
    pairs copied as they are (their references must already be in the sections). ``export``
    records how the members were made. Either the whole bundle appears or nothing does;
    ``overwrite`` replaces only an existing wcx bundle (:func:`check_replaceable`).
    ``sections`` (``policy``, ``calibration``, ``engines``, as for :meth:`Bundle.update_sections`)
    are written in the same manifest, so a calibrated bundle appears at once.
    """
    path = Path(path)
    clean_staging(path)  # puts back a bundle an interrupted replacement left aside
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise BadInputError(f"{path} already exists (pass overwrite=True to replace it)")
        check_replaceable(path)
    specs: list[MemberSection] = []
    with atomic_directory(path, overwrite=overwrite, check_replace=check_replaceable) as tmp:
        for spec, source in members:
            target = _inside(tmp, spec.file, where=str(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            specs.append(replace(spec, sha256=sha256_file(target)))
        for rel, source in extra_files:
            target = _inside(tmp, rel, where=str(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        manifest = new_manifest(specs, export)
        write_manifest(tmp, manifest.with_sections(**sections) if sections else manifest)
    return Bundle.load(path)


def select_members(
    bundle: Bundle, names: Sequence[str], out: str | Path, *, overwrite: bool = False,
    sections: Mapping[str, Any] | None = None,
) -> Bundle:
    """Write a new bundle holding only the members ``names`` of ``bundle``, in that order.

    Files are copied and re-hashed; policy, calibration and engines are dropped (they were
    fitted for the old member set), or replaced by ``sections`` fitted for the new one (see
    :func:`write_bundle`). Used to build a cascade from a model zoo.
    """
    pairs: list[tuple[MemberSection, Path]] = []
    extra: list[tuple[str, Path]] = []
    for index in bundle.member_indices(names):
        spec = bundle.members[index]
        pairs.append((spec, bundle.file(spec.file)))
        extra.extend((rel, bundle.file(rel)) for rel, _ in file_references(spec.to_dict()) if rel != spec.file)
    export = dict(bundle.manifest.export)
    export["selected_from"] = {"bundle": str(bundle.path), "members": list(names)}
    return write_bundle(out, pairs, export, extra_files=extra, overwrite=overwrite, sections=sections)
