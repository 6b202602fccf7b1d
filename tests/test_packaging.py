"""The README's two commands, CI, and the light import path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", quick, flags=re.S)


def test_readme_has_exactly_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each quick-start command is one line"
    assert "wcx demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_import_and_help_without_torch_or_tensorrt() -> None:
    # Heavy optional dependencies must only load inside the backends that need them.
    code = (
        "import sys\n"
        "for name in ('torch', 'tensorrt', 'safetensors', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "import wcx, wcx.cli, wcx.bundle, wcx.data\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(wcx.cli.app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "for cmd in [c.name or c.callback.__name__.replace('_', '-') for c in wcx.cli.app.registered_commands]:\n"
        "    r = CliRunner().invoke(wcx.cli.app, [cmd, '--help'])\n"
        "    assert r.exit_code == 0, (cmd, r.output)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "wcx.cli", "inspect", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "no such bundle directory" in res.stderr


# ---------------------------------------------------------------------------------------------
# the distribution's name: PyPI's "wcx" is an unrelated project
# ---------------------------------------------------------------------------------------------
#: a command that would install PyPI's "wcx" (the bare name, or the name with extras)
_PYPI_WCX = re.compile(r"pip install\s+(?:-U\s+|--upgrade\s+)?['\"]?wcx(?:\[[^\]]*\])?(?=['\"\s`]|$)")


def test_the_distribution_has_a_name_of_its_own() -> None:
    tomllib = __import__("tomllib") if sys.version_info >= (3, 11) else None
    if tomllib is None:
        import pytest

        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from wcx.errors import DISTRIBUTION

    assert project["name"] == DISTRIBUTION == "wcx-cascade"
    assert project["scripts"] == {"wcx": "wcx.cli:main"}  # the command stays wcx, and so does the import


def test_no_hint_installs_pypis_wcx() -> None:
    import ast

    from wcx.errors import install_hint, missing_dependency

    for extra in ("export", "torch", "tensorrt", "test"):
        hint = install_hint(extra)
        assert f'-e ".[{extra}]"' in hint and "wcx_cascade-" in hint and not _PYPI_WCX.search(hint)
        assert ("torch==2.13.0" in hint) == (extra != "tensorrt")
    assert install_hint("export") in str(missing_dependency("torch", "export", "x"))
    for path in (ROOT / "wcx").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not _PYPI_WCX.search(node.value), f"{path}: {node.value!r}"


def test_readme_installs_from_the_checkout() -> None:
    text = (ROOT / "README.md").read_text()
    assert not _PYPI_WCX.search(text)
    assert "`wcx[" not in text
    assert "wcx-cascade" in text
