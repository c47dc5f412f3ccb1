"""One public door: the in-repo plugin packages (code, tests and tools) import
only ``ftkit``'s public names and ``ftkit.testing``, and every type a hook
passes is one of those names."""

from __future__ import annotations

import ast
from pathlib import Path

import ftkit
from ftkit.plugins import hookspecs
from tests.conftest import ROOT

PUBLIC = set(ftkit.__all__) | {"testing"}


def private_uses(source: str) -> list[str]:
    """Every use of ftkit that goes past the facade, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("ftkit.") and a.name != "ftkit.testing"
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ftkit":
            if node.module == "ftkit":
                found += [f"{node.lineno}: {a.name}" for a in node.names if a.name not in PUBLIC]
            elif node.module != "ftkit.testing":
                found.append(f"{node.lineno}: from {node.module}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "ftkit"
            and node.attr not in PUBLIC
        ):
            found.append(f"{node.lineno}: ftkit.{node.attr}")
    return found


def test_the_check_sees_what_goes_past_the_door():
    source = (
        "import ftkit\nimport ftkit.plan.stages\nfrom ftkit import Stage, Config\n"
        "from ftkit.plan.strategy import group\nfrom ftkit.testing import plan\n"
        "ftkit.hookimpl\nftkit.prepare\n"
    )
    assert private_uses(source) == [
        "2: import ftkit.plan.stages",
        "3: Config",
        "4: from ftkit.plan.strategy",
        "7: ftkit.prepare",
    ]


def test_in_repo_plugins_use_only_public_names():
    files = sorted((ROOT / "plugins").rglob("*.py"))
    assert len(files) >= 8
    uses = {
        str(path.relative_to(ROOT)): private_uses(path.read_text())
        for path in files
        if "build" not in path.parts
    }
    assert {path: found for path, found in uses.items() if found} == {}


def test_every_public_name_resolves():
    for name in ftkit.__all__:
        assert getattr(ftkit, name) is not None, name


def test_what_hooks_pass_is_public():
    tree = ast.parse(Path(hookspecs.__file__).read_text())
    typed = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ftkit.")
        for alias in node.names
        if alias.name not in ("hookspec",)
    }
    assert {"Run", "Stage", "EpochRecord", "Summary", "Strategy"} <= typed
    assert typed - PUBLIC == set()
