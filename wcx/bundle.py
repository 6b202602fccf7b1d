"""The cascade bundle: one directory with everything a deployment needs.

Layout::

    BUNDLE/
      wcx.json              the manifest (versioned, human-readable JSON; wcx.core.manifest)
      members/<name>.onnx   one ONNX graph per member, stage 1 first
      ...                   other files the manifest refers to (weights, engines, caches)

Every file the manifest refers to is named by a JSON object with the keys ``file`` (a path
relative to the bundle) and ``sha256``; loading walks the whole manifest, finds those objects and
checks that each file exists and has that hash, so a section added later is covered without new
code here. Files outside the bundle directory are never read.

The manifest's format, its validation and the migration of older versions are
:mod:`wcx.core.manifest`'s business; this module reads and writes it, checks the files, and
replaces sections atomically.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from wcx.atomic import atomic_directory, write_text_atomic
from wcx.core.manifest import (
    SCHEMA_VERSION,
    CalibrationSection,
    EnginesSection,
    InputSection,
    Manifest,
    MemberSection,
    PolicySection,
)
from wcx.errors import BadInputError

MANIFEST_NAME = "wcx.json"

__all__ = ["MANIFEST_NAME", "SCHEMA_VERSION", "Bundle", "select_members", "sha256_file", "write_bundle"]


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _iter_file_refs(node: Any) -> Iterator[Mapping[str, Any]]:
    """Yield every JSON object in the manifest that names a file (has ``file`` and ``sha256``)."""
    if isinstance(node, dict):
        if isinstance(node.get("file"), str) and isinstance(node.get("sha256"), str):
            yield node
        for value in node.values():
            yield from _iter_file_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _iter_file_refs(value)


def _inside(root: Path, rel: str, *, where: str) -> Path:
    """Resolve ``rel`` under ``root``, refusing absolute paths and ``..`` escapes."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise BadInputError(f"{where}: file path {rel!r} points outside the bundle")
    return root.joinpath(*pure.parts)


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
        if not root.is_dir():
            raise BadInputError(f"{root}: no such bundle directory")
        if not manifest_path.is_file():
            raise BadInputError(f"{root}: not a wcx bundle (no {MANIFEST_NAME})")
        try:
            raw = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInputError(f"{manifest_path}: corrupt manifest ({exc})") from None
        bundle = cls(root, Manifest.from_dict(raw, where=str(manifest_path)))
        if verify:
            bundle.verify_files()
        return bundle

    def verify_files(self) -> None:
        """Check that every file the manifest names exists inside the bundle with its sha256."""
        for ref in _iter_file_refs(self.manifest.to_dict()):
            file = _inside(self.path, ref["file"], where=str(self.path))
            if not file.is_file():
                raise BadInputError(f"{self.path}: file {ref['file']} is missing from the bundle")
            actual = sha256_file(file)
            if actual != ref["sha256"]:
                raise BadInputError(
                    f"{self.path}: file {ref['file']} was altered (sha256 {actual[:12]}..., "
                    f"manifest says {ref['sha256'][:12]}...)"
                )

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
) -> Bundle:
    """Create a bundle directory atomically from already-built member files.

    ``members`` pairs each section (whose ``file`` is the path inside the bundle) with the file to
    copy there; ``sha256`` is recomputed from the copy. ``extra_files`` are ``(rel, source)``
    pairs copied as they are (their references must already be in the sections). ``export``
    records how the members were made. Either the whole bundle appears or nothing does.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BadInputError(f"{path} already exists (pass overwrite=True to replace it)")
    specs: list[MemberSection] = []
    with atomic_directory(path, overwrite=overwrite) as tmp:
        for spec, source in members:
            target = _inside(tmp, spec.file, where=str(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            specs.append(replace(spec, sha256=sha256_file(target)))
        for rel, source in extra_files:
            target = _inside(tmp, rel, where=str(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        write_manifest(tmp, new_manifest(specs, export))
    return Bundle.load(path)


def select_members(
    bundle: Bundle, names: Sequence[str], out: str | Path, *, overwrite: bool = False
) -> Bundle:
    """Write a new bundle holding only the members ``names`` of ``bundle``, in that order.

    Files are copied and re-hashed; policy, calibration and engines are dropped (they were
    fitted for the old member set). Used to build a cascade from a model zoo.
    """
    pairs: list[tuple[MemberSection, Path]] = []
    extra: list[tuple[str, Path]] = []
    for index in bundle.member_indices(names):
        spec = bundle.members[index]
        pairs.append((spec, bundle.file(spec.file)))
        extra.extend((ref["file"], bundle.file(ref["file"])) for ref in _iter_file_refs(spec.to_dict())
                     if ref["file"] != spec.file)
    export = dict(bundle.manifest.export)
    export["selected_from"] = {"bundle": str(bundle.path), "members": list(names)}
    return write_bundle(out, pairs, export, extra_files=extra, overwrite=overwrite)
