"""Safe writes: overwrite replaces only a wcx bundle, a replacement is one exchange (or two renames
that the next load or write recovers), leftovers of killed processes are cleaned, the demo never
deletes a user's files, and kill -9 in the middle of a write leaves the old or the new bundle."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wcx import atomic
from wcx.bundle import Bundle, select_members
from wcx.cli import app
from wcx.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "chapters" / "one.tex").write_text("more")
    return folder


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(mlp_bundle: Bundle, user_dir: Path) -> None:
    before = _listing(user_dir)
    with pytest.raises(BadInputError, match="is not a valid wcx bundle.*refusing to replace it"):
        select_members(mlp_bundle, ["m0"], user_dir, overwrite=True)
    assert _listing(user_dir) == before and (user_dir / "thesis.tex").read_text() == "years of work"
    assert _hidden(user_dir.parent) == []


def test_overwrite_refuses_a_file_and_a_link(mlp_bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match="is not a wcx bundle directory"):
        select_members(mlp_bundle, ["m0"], tmp_path / "notes.txt", overwrite=True)
    real = select_members(mlp_bundle, ["m0"], tmp_path / "real")
    (tmp_path / "link").symlink_to(real.path)
    with pytest.raises(BadInputError, match="symbolic link"):
        select_members(mlp_bundle, ["m1"], tmp_path / "link", overwrite=True)
    assert Bundle.load(real.path).members[0].name == "m0"


def test_cli_export_overwrite_of_user_files_is_exit_2(mlp_bundle: Bundle, user_dir: Path) -> None:
    before = _listing(user_dir)
    res = CliRunner().invoke(app, ["export", str(mlp_bundle.member_path(0)), "--input-shape", "1,8,8", "--out",
                                   str(user_dir), "--overwrite"])
    assert res.exit_code == 2 and "refusing to replace it" in res.output
    assert _listing(user_dir) == before


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_overwrite_replaces_a_bundle(mlp_bundle3: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     exchange: bool) -> None:
    if exchange and atomic._RENAMEAT2 is None:
        pytest.skip("no renameat2 here")
    used: list[bool] = []
    real = atomic.exchange

    def spy(a: Path, b: Path) -> bool:
        used.append(real(a, b) if exchange else False)
        return used[-1]

    monkeypatch.setattr(atomic, "exchange", spy)
    dest = tmp_path / "b"
    select_members(mlp_bundle3, ["m0"], dest)
    select_members(mlp_bundle3, ["m2", "m1"], dest, overwrite=True)
    assert [m.name for m in Bundle.load(dest).members] == ["m2", "m1"]
    assert used == [exchange]
    assert _hidden(tmp_path) == [], "the old bundle and the staging copy are gone"


def test_exchange_swaps_two_directories(tmp_path: Path) -> None:
    if atomic._RENAMEAT2 is None:
        pytest.skip("no renameat2 here")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y").write_text("b")
    assert atomic.exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "y").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"


def test_an_interrupted_two_rename_replacement_is_recovered(mlp_bundle3: Bundle, tmp_path: Path) -> None:
    dest = select_members(mlp_bundle3, ["m0", "m1"], tmp_path / "b")
    digest = dest.digest()
    dead = _dead_pid()
    # killed between the two renames: the old bundle aside, the new one staged, nothing at the path
    os.rename(dest.path, tmp_path / f".b.{dead}-1a2b.old")
    select_members(mlp_bundle3, ["m2"], tmp_path / "staged")
    os.rename(tmp_path / "staged", tmp_path / f".b.{dead}-3c4d.tmp")
    assert not dest.path.exists()
    assert Bundle.load(tmp_path / "b").digest() == digest  # the next load puts the old one back
    assert _hidden(tmp_path) == [f".b.{dead}-3c4d.tmp"]
    select_members(mlp_bundle3, ["m2"], tmp_path / "b", overwrite=True)  # the next write cleans up
    assert _hidden(tmp_path) == []
    assert [m.name for m in Bundle.load(tmp_path / "b").members] == ["m2"]


def test_an_interrupted_replacement_is_recovered_by_the_next_write(mlp_bundle3: Bundle, tmp_path: Path) -> None:
    dest = select_members(mlp_bundle3, ["m0"], tmp_path / "b")
    os.rename(dest.path, tmp_path / f".b.{_dead_pid()}-1a2b.old")
    with pytest.raises(BadInputError, match="already exists"):  # recovered first: nothing is lost
        select_members(mlp_bundle3, ["m1"], tmp_path / "b")
    assert [m.name for m in Bundle.load(tmp_path / "b").members] == ["m0"]


def test_leftovers_of_dead_processes_are_cleaned_and_live_ones_kept(tmp_path: Path) -> None:
    dead, mine = _dead_pid(), os.getpid()
    (tmp_path / f".out.json.{dead}-abc.tmp").write_text("half")
    (tmp_path / f".out.json.{mine}-def.tmp").write_text("being written")
    (tmp_path / f".other.json.{dead}-ghi.tmp").write_text("someone else's path")
    atomic.write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}
    assert _hidden(tmp_path) == [f".other.json.{dead}-ghi.tmp", f".out.json.{mine}-def.tmp"]


_WRITER = """
import itertools, sys
import wcx.atomic as atomic
from wcx.bundle import Bundle, select_members
if sys.argv[3] == "renames":
    atomic._RENAMEAT2 = None
src = Bundle.load(sys.argv[1])
print("ready", flush=True)
for i in itertools.count():
    select_members(src, ["m0", "m1"] if i % 2 else ["m2"], sys.argv[2], overwrite=True)
"""


@pytest.mark.parametrize("mode", ["exchange", "renames"])
def test_kill_9_during_a_write_leaves_the_old_or_the_new_bundle(mlp_bundle3: Bundle, tmp_path: Path,
                                                                mode: str) -> None:
    dest = tmp_path / "b"
    select_members(mlp_bundle3, ["m2"], dest)
    rng = random.Random(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(mlp_bundle3.path), str(dest), mode],
                                stdout=subprocess.PIPE, cwd=ROOT)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        names = [m.name for m in Bundle.load(dest).members]  # complete and verified, or recovered
        assert names in (["m0", "m1"], ["m2"])
    select_members(mlp_bundle3, ["m2"], dest, overwrite=True)
    assert _hidden(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# wcx demo --out
# ---------------------------------------------------------------------------------------------
def test_demo_refuses_a_folder_of_user_files(user_dir: Path) -> None:
    from wcx.demo import run_demo

    before = _listing(user_dir)
    with pytest.raises(BadInputError, match="not the output of an earlier wcx demo"):
        run_demo(user_dir)
    assert _listing(user_dir) == before
    res = CliRunner().invoke(app, ["demo", "--out", str(user_dir)])
    assert res.exit_code == 2 and _listing(user_dir) == before


def test_demo_refuses_user_files_in_its_bundle_folder(tmp_path: Path) -> None:
    from wcx.demo import check_demo_dir

    (tmp_path / "d" / "bundle").mkdir(parents=True)
    (tmp_path / "d" / "bundle" / "thesis.tex").write_text("x")
    with pytest.raises(BadInputError, match="not the output of an earlier wcx demo"):
        check_demo_dir(tmp_path / "d")


def test_demo_accepts_new_empty_and_earlier_demo_folders(mlp_bundle: Bundle, tmp_path: Path) -> None:
    from wcx.demo import check_demo_dir

    check_demo_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_demo_dir(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    (earlier / "plots").mkdir(parents=True)
    (earlier / "results.json").write_text(json.dumps({"demo": {"size": "b3"}}))
    check_demo_dir(earlier)
    stopped = tmp_path / "stopped"  # an earlier run that ended before results.json
    select_members(mlp_bundle, ["m0"], stopped / "bundle")
    check_demo_dir(stopped)
    (earlier / "results.json").write_text(json.dumps({"mine": 1}))
    with pytest.raises(BadInputError):
        check_demo_dir(earlier)
