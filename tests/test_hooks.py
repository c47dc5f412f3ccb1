"""Every hook is documented (docs/hooks.md is generated and current) and
exercised by at least one test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ftkit.plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("ftkit_"))


def test_hook_docs_are_current():
    result = subprocess.run(
        [sys.executable, "tools/gen_hook_docs.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    doc = getattr(hookspecs, hook).__doc__
    assert doc and len(doc.split()) >= 8, f"{hook} needs a docstring that explains it"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    """A test must implement or call the hook (its name appears in a test)."""
    sources = [
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name
    ]
    assert any(hook in text for text in sources), f"no test exercises {hook}"
