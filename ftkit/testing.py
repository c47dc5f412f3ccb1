"""Helpers for a plugin's own tests, as pytest ships ``Pytester``: load
plugins as ftkit does, plan a strategy on a model without a run, and run the
command line in-process. ``plugins/*/tests`` use nothing else of ftkit.

    from ftkit import testing

    def test_my_strategy_trains_only_the_head():
        plugins = testing.plugins("my_plugin")
        anatomy = testing.anatomy_of(torchvision.models.resnet18(), plugins)
        plan = testing.plan("mine", anatomy, plugins=plugins, lr=1e-4, options={"k": 2})
        assert plan.stages[0].frozen ...

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftkit.plan.anatomy import Anatomy
from ftkit.plan.anatomy import anatomy_of as _anatomy_of
from ftkit.plan.build import make_plan
from ftkit.plan.options import resolve_options
from ftkit.plan.stages import Plan
from ftkit.plan.strategy import PlanRequest, Strategy

if TYPE_CHECKING:
    from torch import nn

    from ftkit.plugins.manager import Plugins

__all__ = ["CliResult", "anatomy_of", "cli", "entry_points", "one_line_error", "plan", "plugins"]

AUTOLOAD_OFF = "FTKIT_DISABLE_PLUGIN_AUTOLOAD"


@contextlib.contextmanager
def entry_points(load: bool) -> Iterator[None]:
    """Load the installed ``ftkit`` entry points inside the block, or not:
    a test that names its plugin module must not also get it installed."""
    before = os.environ.get(AUTOLOAD_OFF)
    if load:
        os.environ.pop(AUTOLOAD_OFF, None)
    else:
        os.environ[AUTOLOAD_OFF] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(AUTOLOAD_OFF, None)
        else:
            os.environ[AUTOLOAD_OFF] = before


def plugins(*modules: str, load_entry_points: bool = False) -> Plugins:
    """ftkit's built-in plugins and ``modules`` (importable names), as
    ``--plugin`` loads them; the installed entry points only when asked."""
    from ftkit.plugins.manager import Plugins

    with entry_points(load_entry_points):
        return Plugins(modules)


_builtins = plugins  # for ``plan``, whose ``plugins`` argument hides the function


def anatomy_of(model: nn.Module, loaded: Plugins | None = None) -> Anatomy:
    """The anatomy ftkit would use for ``model`` (the registered providers'
    first match by priority)."""
    loaded = loaded or plugins()
    return _anatomy_of(model, [entry.value for entry in loaded.anatomies])


def plan(
    strategy: str | Strategy,
    anatomy: Anatomy,
    *,
    plugins: Plugins | None = None,
    lr: float = 1e-4,
    epochs: int = 1,
    options: Mapping[str, Any] | None = None,
    loss: str = "ce",
    **request: Any,
) -> Plan:
    """The plan ``ftkit plan`` would print for ``strategy`` (a registered name
    or a ``Strategy``) on ``anatomy``: ``options`` checked as ``-o`` checks
    them, ``request`` the rest of ``PlanRequest`` (``pretrained=True``, ...)."""
    if isinstance(strategy, str):
        loaded = plugins if plugins is not None else _builtins()
        strategy = loaded.strategies.get(strategy)
    raw = {key: str(value) for key, value in (options or {}).items()}
    resolved = resolve_options(strategy.all_options(), raw, "test")
    return make_plan(strategy, anatomy, PlanRequest(lr, epochs, resolved, **request), loss=loss)


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def cli(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """``ftkit ARGS`` in this process (no torch import per call), as the
    ``ftkit`` script runs it: its exit code, and stdout and stderr apart."""
    from click.testing import CliRunner

    from ftkit.cli import main

    code = 0
    with CliRunner().isolation(env=dict(env or {})) as (stdout, stderr, _):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    return CliResult(code, out, err)


def one_line_error(result: CliResult, code: int = 2) -> str:
    """ftkit's contract for bad input: the exit code, exactly one line on
    stderr, no traceback. Returns the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]
