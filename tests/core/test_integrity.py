"""Bundle integrity: every named file carries a hash, no links, one digest; the logits cache lives
outside the bundle and is hash-checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from wcx.bundle import MANIFEST_NAME, Bundle
from wcx.cli import app
from wcx.errors import BadInputError

ROOT = Path(__file__).resolve().parents[2]


def _copy(bundle: Bundle, dest: Path) -> Path:
    shutil.copytree(bundle.path, dest)
    return dest


def _edit(path: Path, change: Any) -> None:
    raw = json.loads((path / MANIFEST_NAME).read_text())
    change(raw)
    (path / MANIFEST_NAME).write_text(json.dumps(raw))


def _engines(raw: dict[str, Any], *, cache_sha: Any = "c" * 64, engine_sha: Any = "e" * 64) -> None:
    m0 = raw["members"][0]
    raw["engines"] = {"backend": "tensorrt", "members": {"m0": {
        "member": "m0", "file": "engines/m0.engine", "sha256": engine_sha, "tensorrt_version": "10.3.0.30",
        "compute_capability": "8.7", "onnx_sha256": m0["sha256"],
        "profile": {"min": [1, 1, 8, 8], "opt": [8, 1, 8, 8], "max": [16, 1, 8, 8]}}},
        "timing_cache": {"file": "engines/timing.cache", "sha256": cache_sha, "tensorrt_version": "10.3.0.30",
                         "compute_capability": "8.7"}}


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw["members"][0].update(sha256=None), "missing 'sha256'"),
    (lambda raw: raw["members"][0].pop("sha256"), "missing 'sha256'"),
    (lambda raw: raw["members"][0].update(torch_source={"callable": "m:f", "file": "members/w.safetensors",
                                                        "sha256": None}), "missing 'sha256'"),
    (lambda raw: _engines(raw, cache_sha=None), "missing 'sha256'"),
    (lambda raw: _engines(raw, engine_sha="0" * 63), "sha256"),
    # a file named anywhere, in a section this wcx does not know, must carry its hash too
    (lambda raw: raw["export"].update(extra={"file": "members/m1.onnx", "sha256": None}), "no valid sha256"),
    (lambda raw: raw["export"].update(extra={"file": "members/m1.onnx"}), "no valid sha256"),
])
def test_a_named_file_without_a_hash_is_refused(mlp_bundle: Bundle, tmp_path: Path, change: Any,
                                                message: str) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    _edit(path, change)
    with pytest.raises(BadInputError, match=message):
        Bundle.load(path)


def test_inspect_of_a_null_hash_is_one_line_exit_2(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    _edit(path, lambda raw: raw["members"][0].update(sha256=None))
    (path / "members" / "m0.onnx").write_bytes((path / "members" / "m1.onnx").read_bytes())  # swapped file
    res = subprocess.run([sys.executable, "-m", "wcx.cli", "inspect", str(path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "sha256" in res.stderr


def test_a_swapped_file_is_refused(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    shutil.copyfile(path / "members" / "m1.onnx", path / "members" / "m0.onnx")
    with pytest.raises(BadInputError, match="m0.onnx was altered"):
        Bundle.load(path)


def test_a_symlinked_member_file_is_refused(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    outside = tmp_path / "outside.onnx"
    shutil.move(path / "members" / "m0.onnx", outside)
    (path / "members" / "m0.onnx").symlink_to(outside)  # same bytes, same hash: still refused
    with pytest.raises(BadInputError, match="members/m0.onnx is a symbolic link"):
        Bundle.load(path)


def test_a_symlinked_members_directory_is_refused(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    shutil.move(path / "members", tmp_path / "elsewhere")
    (path / "members").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BadInputError, match="members is a symbolic link"):
        Bundle.load(path)


def test_a_link_pointing_inside_the_bundle_is_refused_too(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    (path / "alias").symlink_to(path / "members")
    _edit(path, lambda raw: raw["members"][0].update(file="alias/m0.onnx"))
    with pytest.raises(BadInputError, match="alias is a symbolic link"):
        Bundle.load(path)


def test_a_symlinked_manifest_is_refused(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "b")
    shutil.move(path / MANIFEST_NAME, tmp_path / "m.json")
    (path / MANIFEST_NAME).symlink_to(tmp_path / "m.json")
    with pytest.raises(BadInputError, match="wcx.json is a symbolic link"):
        Bundle.load(path)


def test_the_bundle_root_may_be_a_link(mlp_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(mlp_bundle, tmp_path / "real")
    (tmp_path / "link").symlink_to(path)
    assert Bundle.load(tmp_path / "link").digest() == Bundle.load(path).digest()


def test_digest_pins_the_manifest_and_every_file(mlp_bundle: Bundle, tmp_path: Path) -> None:
    a = Bundle.load(_copy(mlp_bundle, tmp_path / "a"))
    b = Bundle.load(_copy(mlp_bundle, tmp_path / "b"))
    assert a.digest() == b.digest() and a.digest().startswith("sha256:") and len(a.digest()) == 71
    b.update_sections(policy={"kind": "all", "tau": 0.5})
    assert Bundle.load(b.path).digest() != a.digest()
    with open(a.path / "members" / "m1.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BadInputError, match="altered"):
        a.digest()


def test_inspect_prints_the_digest(mlp_bundle: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "i.json"
    res = CliRunner().invoke(app, ["inspect", str(mlp_bundle.path), "--json", str(out)])
    assert res.exit_code == 0, res.output
    digest = mlp_bundle.digest()
    assert f"digest: {digest}" in res.output
    assert json.loads(out.read_text())["digest"] == digest


# ---------------------------------------------------------------------------------------------
# the logits cache
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from wcx.calibration.logits_cache import ENV_VAR

    root = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(root))
    return root


def _data(tmp_path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.random((n, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 4, n))
    return path


def test_cache_lives_outside_the_bundle_keyed_by_the_file(mlp_bundle: Bundle, tmp_path: Path,
                                                          cache_root: Path) -> None:
    from wcx.calibration.held_out import open_data_for, run_members

    b = Bundle.load(_copy(mlp_bundle, tmp_path / "b"))
    data = open_data_for(b, _data(tmp_path), require_labels=False)
    first = run_members(b, data).logits
    entries = list((cache_root / "logits").glob("*.npz"))
    assert len(entries) == 1 and not (b.path / "cache").exists()
    assert sorted(p.name for p in b.path.iterdir()) == ["members", "wcx.json"]
    np.testing.assert_array_equal(run_members(b, data).logits, first)
    # data in memory is cached only under a key the caller names
    run_members(b, data.read())
    assert len(list((cache_root / "logits").glob("*.npz"))) == 1
    run_members(b, data.read(), data_key="my-data")
    assert len(list((cache_root / "logits").glob("*.npz"))) == 2


def test_a_damaged_or_poisoned_entry_is_recomputed(mlp_bundle: Bundle, tmp_path: Path, cache_root: Path) -> None:
    from wcx.calibration import logits_cache
    from wcx.calibration.held_out import open_data_for, run_members

    b = Bundle.load(_copy(mlp_bundle, tmp_path / "b"))
    data = open_data_for(b, _data(tmp_path), require_labels=False)
    truth = run_members(b, data, cache=False).logits
    run_members(b, data)
    (entry,) = (cache_root / "logits").glob("*.npz")
    with np.load(entry) as z:
        stored = {k: z[k] for k in z.files}
    # confident fake logits of the right shape, the stored hash left as it was
    poisoned = np.zeros_like(stored["logits"])
    poisoned[..., 0] = 50.0
    np.savez(entry, logits=poisoned, key=stored["key"], sha256=stored["sha256"])
    assert logits_cache.read_entry(str(stored["key"]), truth.shape) is None
    np.testing.assert_array_equal(run_members(b, data).logits, truth)
    with np.load(entry) as z:  # rewritten intact
        np.testing.assert_array_equal(z["logits"], truth)
    entry.write_bytes(b"PK\x03\x04 garbage")
    np.testing.assert_array_equal(run_members(b, data).logits, truth)


def test_an_unwritable_cache_only_costs_the_speed_up(mlp_bundle: Bundle, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from wcx.calibration.held_out import open_data_for, run_members
    from wcx.calibration.logits_cache import ENV_VAR

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "file" / "cache"))
    b = Bundle.load(_copy(mlp_bundle, tmp_path / "b"))
    data = open_data_for(b, _data(tmp_path), require_labels=False)
    with caplog.at_level("WARNING"):
        logits = run_members(b, data).logits
    assert logits.shape == (2, 60, 4) and "cannot write the logits cache" in caplog.text


def test_calibrate_never_writes_into_a_cache_link_in_the_bundle(mlp_bundle: Bundle, tmp_path: Path,
                                                                 cache_root: Path) -> None:
    """A ``cache`` link left in a bundle (to /etc, say) is never followed: nothing is written there."""
    path = _copy(mlp_bundle, tmp_path / "b")
    target = tmp_path / "target"
    target.mkdir()
    (path / "cache").symlink_to(target)
    data = _data(tmp_path, 300)
    res = CliRunner().invoke(app, ["calibrate", str(path), "--data", str(data), "--risk", "0.5"])
    assert res.exit_code in (0, 1), res.output
    assert list(target.iterdir()) == []
    assert list((cache_root / "logits").glob("*.npz"))


def test_default_cache_dir_follows_the_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from wcx.calibration import logits_cache

    monkeypatch.delenv(logits_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert logits_cache.cache_dir() == tmp_path / "xdg" / "wcx" / "logits"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert logits_cache.cache_dir() == Path.home() / ".cache" / "wcx" / "logits"
    monkeypatch.setenv(logits_cache.ENV_VAR, str(tmp_path / "mine"))
    assert logits_cache.cache_dir() == tmp_path / "mine" / "logits"
