"""The cascade bundle: one directory with everything a deployment needs.

Layout::

    BUNDLE/
      wcx.json              the manifest (versioned, human-readable JSON)
      members/<name>.onnx   one ONNX graph per member, stage 1 first
      ...                   other files the manifest refers to (weights, engines, caches)

Every file the manifest refers to is named by a JSON object with the keys ``file`` (a path
relative to the bundle) and ``sha256``; loading walks the whole manifest, finds those objects and
checks that each file exists and has that hash, so a section added later (engines, torch
sources) is covered without new code here. Files outside the bundle directory are never read.

Manifest (``schema_version`` 1)::

    {
      "schema_version": 1,
      "created": "2026-11-26T18:00:00+00:00",
      "provenance": {"wcx": "...", "torch": "..." | null, "onnx": "...", "onnxruntime": "...",
                     "export_options": {...}},
      "members": [
        {"name": "m0", "file": "members/m0.onnx", "sha256": "...", "precision": "fp32",
         "input_name": "input", "input_shape": [null, 1, 28, 28], "input_dtype": "float32",
         "output_name": "logits", "num_classes": 10, "macs": 123456,
         "preprocess": {"mean": [0.286], "std": [0.353]},
         "torch_source": null | {"callable": "pkg.mod:fn", "file": "...", "sha256": "..."},
         "export_report": {...}}
      ],
      "policy": null | {...},        # written by calibration (see wcx.calibration)
      "calibration": null | {...},   # written by calibration
      "engines": null | {...}        # written by the TensorRT engine builder
    }

``input_shape`` has ``null`` for the dynamic batch dimension. All members share one input shape
and one preprocessing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from wcx.atomic import atomic_directory, write_text_atomic
from wcx.errors import BadInputError

SCHEMA_VERSION = 1
MANIFEST_NAME = "wcx.json"
PRECISIONS = ("fp32", "fp16", "int8")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class MemberSpec:
    """What the manifest records about one ensemble member (one cascade stage)."""

    name: str
    file: str
    sha256: str
    precision: str
    input_name: str
    input_shape: list[int | None]
    input_dtype: str
    output_name: str
    num_classes: int
    macs: int
    preprocess: dict[str, list[float]]
    torch_source: dict[str, Any] | None = None
    export_report: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The input shape without the batch dimension, e.g. (C, H, W)."""
        return tuple(int(d) for d in self.input_shape[1:])

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str) -> MemberSpec:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"name", "file", "sha256", "precision", "input_name", "input_shape",
                   "input_dtype", "output_name", "num_classes", "macs", "preprocess"} - set(data)
        if missing:
            raise BadInputError(f"{where}: member record lacks {', '.join(sorted(missing))}")
        spec = cls(**{k: v for k, v in data.items() if k in known})
        if spec.precision not in PRECISIONS:
            raise BadInputError(f"{where}: member {spec.name!r} has unknown precision {spec.precision!r}")
        return spec


def _iter_file_refs(node: Any) -> Iterator[dict[str, Any]]:
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
    """A loaded, verified cascade bundle.

    ``members`` are in stage order. ``manifest`` is the raw JSON dict (sections ``policy``,
    ``calibration``, ``engines`` are owned by the parts of wcx that write them).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], members: list[MemberSpec]) -> None:
        self.path = path
        self.manifest = manifest
        self.members = members

    # -- reading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> Bundle:
        """Read ``path/wcx.json`` and (with ``verify``) check every referenced file's sha256.

        Raises ``BadInputError`` with a one-line message for a missing directory or manifest,
        corrupt JSON, an unknown ``schema_version``, a missing or altered file, or members that
        disagree on input shape or preprocessing.
        """
        root = Path(path)
        manifest_path = root / MANIFEST_NAME
        if not root.is_dir():
            raise BadInputError(f"{root}: no such bundle directory")
        if not manifest_path.is_file():
            raise BadInputError(f"{root}: not a wcx bundle (no {MANIFEST_NAME})")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadInputError(f"{manifest_path}: corrupt manifest ({exc})") from None
        if not isinstance(manifest, dict):
            raise BadInputError(f"{manifest_path}: corrupt manifest (not a JSON object)")
        version = manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BadInputError(
                f"{manifest_path}: schema_version {version!r} is not supported by this wcx "
                f"(it reads {SCHEMA_VERSION}); re-export the bundle or upgrade wcx"
            )
        raw_members = manifest.get("members")
        if not isinstance(raw_members, list) or not raw_members:
            raise BadInputError(f"{manifest_path}: the manifest lists no members")
        try:
            members = [MemberSpec.from_dict(m, where=str(manifest_path)) for m in raw_members]
        except TypeError as exc:
            raise BadInputError(f"{manifest_path}: corrupt member record ({exc})") from None
        bundle = cls(root, manifest, members)
        bundle._check_consistent()
        if verify:
            bundle.verify_files()
        return bundle

    def _check_consistent(self) -> None:
        first = self.members[0]
        for m in self.members[1:]:
            if m.sample_shape != first.sample_shape:
                raise BadInputError(
                    f"{self.path}: members {first.name!r} and {m.name!r} have different input "
                    f"shapes {first.sample_shape} and {m.sample_shape} (one shape per bundle)"
                )
            if m.preprocess != first.preprocess:
                raise BadInputError(
                    f"{self.path}: members {first.name!r} and {m.name!r} use different preprocessing"
                )
            if m.num_classes != first.num_classes:
                raise BadInputError(
                    f"{self.path}: members {first.name!r} and {m.name!r} have different class counts"
                )
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise BadInputError(f"{self.path}: member names are not unique: {names}")

    def verify_files(self) -> None:
        """Check that every file the manifest names exists inside the bundle with its sha256."""
        for ref in _iter_file_refs(self.manifest):
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

    # -- convenience views ---------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.members[0].sample_shape

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def preprocess(self) -> dict[str, list[float]]:
        return self.members[0].preprocess

    @property
    def member_macs(self) -> list[int]:
        return [m.macs for m in self.members]

    @property
    def policy(self) -> dict[str, Any] | None:
        return self.manifest.get("policy")

    @property
    def calibration(self) -> dict[str, Any] | None:
        return self.manifest.get("calibration")

    # -- writing -------------------------------------------------------------------------------
    def update_sections(self, **sections: Any) -> None:
        """Set top-level manifest sections (e.g. ``policy=..., calibration=...``) atomically."""
        for key in ("schema_version", "members"):
            if key in sections:
                raise ValueError(f"update_sections cannot replace {key!r}")
        self.manifest.update(sections)
        write_manifest(self.path, self.manifest)

    def add_file(self, rel: str, source: str | Path) -> dict[str, str]:
        """Copy ``source`` into the bundle at ``rel`` atomically; return its ``{file, sha256}``.

        The caller puts the returned reference into a manifest section and calls
        ``update_sections``; until then the file is not part of the bundle.
        """
        from wcx.atomic import atomic_write

        target = self.file(rel)
        with atomic_write(target) as tmp:
            shutil.copyfile(source, tmp)
        return {"file": rel, "sha256": sha256_file(target)}


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``root/wcx.json`` atomically (sorted keys off: the order above reads best)."""
    write_text_atomic(Path(root) / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


def new_manifest(members: Sequence[MemberSpec], provenance: dict[str, Any]) -> dict[str, Any]:
    """A fresh manifest for ``members`` (no policy or calibration yet)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance,
        "members": [asdict(m) for m in members],
        "policy": None,
        "calibration": None,
        "engines": None,
    }


def write_bundle(
    path: str | Path,
    members: Sequence[tuple[MemberSpec, Path]],
    provenance: dict[str, Any],
    *,
    extra_files: Sequence[tuple[str, Path]] = (),
    overwrite: bool = False,
) -> Bundle:
    """Create a bundle directory atomically from already-built member files.

    ``members`` pairs each spec (whose ``file`` is the path inside the bundle) with the file to
    copy there; ``sha256`` is recomputed from the copy. ``extra_files`` are ``(rel, source)``
    pairs copied as they are (their references must already be in the specs). Either the whole
    bundle appears or nothing does.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BadInputError(f"{path} already exists (pass overwrite to replace it)")
    specs: list[MemberSpec] = []
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
        write_manifest(tmp, new_manifest(specs, provenance))
    return Bundle.load(path)


def select_members(
    bundle: Bundle, names: Sequence[str], out: str | Path, *, overwrite: bool = False
) -> Bundle:
    """Write a new bundle holding only the members ``names`` of ``bundle``, in that order.

    Files are copied and re-hashed; policy, calibration and engines are dropped (they were
    fitted for the old member set). Used to build a cascade from a model zoo.
    """
    pairs: list[tuple[MemberSpec, Path]] = []
    extra: list[tuple[str, Path]] = []
    for index in bundle.member_indices(names):
        spec = bundle.members[index]
        pairs.append((replace(spec), bundle.file(spec.file)))
        extra.extend((ref["file"], bundle.file(ref["file"])) for ref in _iter_file_refs(asdict(spec))
                     if ref["file"] != spec.file)
    provenance = dict(bundle.manifest.get("provenance", {}))
    provenance["selected_from"] = {"bundle": str(bundle.path), "members": list(names)}
    return write_bundle(out, pairs, provenance, extra_files=extra, overwrite=overwrite)
