"""The first contact: building and installing the package, and getting the command on PATH."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_builds_without_a_warning(tmp_path: Path) -> None:
    """Building the wheel (what `make install` does) prints no warning: `make demo` starts clean."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "bulk_cancel", project / "bulk_cancel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", "dist", "."],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0 and "No matching distribution" in built.stdout + built.stderr:
        pytest.skip("no package index with setuptools is reachable from here")
    assert built.returncode == 0, built.stdout + built.stderr
    backend = [
        line
        for line in (built.stdout + built.stderr).splitlines()
        if "Warning" in line or "deprecated" in line.lower()
    ]
    assert backend == []
    assert list((project / "dist").glob("bulk_cancel-*.whl"))


def test_the_license_is_an_spdx_expression() -> None:
    """pyproject's license is the SPDX string setuptools 77+ expects, not the deprecated table."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "MIT"
    assert any(r.startswith("setuptools>=77") for r in data["build-system"]["requires"])


def test_the_readme_says_how_to_get_the_command_on_path() -> None:
    """Every example starts with `bulk-cancel`: the quick start says how to get it on PATH."""
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert ". .venv/bin/activate" in quick_start and "pipx install ." in quick_start
    makefile = (ROOT / "Makefile").read_text()
    assert "-qq" in makefile and ". $(BIN)/activate" in makefile
