"""The layer order of docs/architecture.md, enforced: import-linter's
contracts in pyproject.toml (layers, and no circles between siblings), every
module placed in a layer, and nothing inside ftkit importing the facade. Imports
inside functions and under TYPE_CHECKING count."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the ``ftkit`` package found in ``where`` (it puts the
    working directory first on the path)."""
    run = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return subprocess.run(
        [sys.executable, "-c", run, str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_is_in_a_layer_and_none_imports_the_facade():
    graph = grimp.build_graph("ftkit", cache_dir=None)
    layers = next(c["layers"] for c in CONTRACTS["contracts"] if "containers" not in c)
    placed = {name for layer in layers for name in re.split(r"\s*[|:]\s*", layer)}
    modules = graph.modules - {"ftkit", "ftkit.plugins"}  # the facade; plugins/ holds layers
    unplaced = sorted(
        m for m in modules if not any(m == p or m.startswith(p + ".") for p in placed)
    )
    assert unplaced == []
    importers = graph.find_modules_that_directly_import("ftkit")
    assert (
        sorted(importers) == []
    )  # the facade imports everything: a module importing it is a circle


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package to break on purpose."""
    shutil.copytree(
        ROOT / "ftkit", tmp_path / "ftkit", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def add_import(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n\ndef _added():\n    {line}  # noqa\n")


def test_an_upward_import_inside_a_function_breaks_the_layers(tree: Path):
    add_import(tree, "ftkit.plan.units", "from ftkit.engine.session import Session")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "ftkit.plan is not allowed to import ftkit.engine" in result.stdout
    assert "ftkit.plan.units -> ftkit.engine.session" in result.stdout


def test_a_circle_inside_one_layer_is_refused(tree: Path):
    # losses and optimizers share a layer: either may import the other, not both
    add_import(tree, "ftkit.losses", "from ftkit.optimizers import Optimizer")
    add_import(tree, "ftkit.optimizers", "from ftkit.losses import Loss")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "no circles" in result.stdout and "BROKEN" in result.stdout
    assert ".optimizers -> .losses" in result.stdout or ".losses -> .optimizers" in result.stdout
