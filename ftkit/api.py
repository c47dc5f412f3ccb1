"""The Python API: ``ftkit plan``, ``ftkit run`` and ``ftkit eval`` for a
notebook, as ``ftkit.plan_run``, ``ftkit.run`` and ``ftkit.evaluate``.

Each takes the command line's options as keywords, named as the options are
with ``_`` for ``-`` (``lr=1e-5``, ``batch_size=8``, ``start_from=RUN`` for
``--from``), a strategy's ``-o`` options as ``options={...}``, plugin modules
as ``plugins=[...]`` and a TOML file as ``config=``; a plugin's own options
(``max_length=64``) too. Everything goes through
``ftkit.configure.make_config``, the command line's own path, so a bad value
raises ``UsageError`` with the line the CLI would print. Environment
variables (``FTKIT_*``) are the command line's; keywords here are explicit.

Importing this module is cheap: each function imports the engine it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ftkit.configure import make_config
from ftkit.errors import UsageError

if TYPE_CHECKING:
    from ftkit.config import Config
    from ftkit.engine.run import Outcome
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import Prepared

__all__ = ["evaluate", "plan_run", "run"]


def plan_run(
    *,
    config: str | None = None,
    options: Mapping[str, Any] | None = None,
    plugins: Iterable[str] = (),
    **values: Any,
) -> Prepared:
    """What ``ftkit run`` would execute, checked as ``ftkit plan`` checks it:
    ``.plan`` (stages, groups, absolute LRs, ``.warnings``), ``.table()`` (what
    ``ftkit plan`` prints), ``.model`` with its starting weights, ``.anatomy``."""
    from ftkit.prepare import prepare_run

    cfg, loaded = _configure("plan_run", config, options, plugins, values)
    return prepare_run(cfg, loaded)


def run(
    *,
    config: str | None = None,
    options: Mapping[str, Any] | None = None,
    plugins: Iterable[str] = (),
    resume: str | None = None,
    **values: Any,
) -> Outcome:
    """Train as ``ftkit run`` does and write the run directory: how it ended
    (``.stop_reason``), where (``.dir``) and its ``.summary`` (``ftkit.Summary``).
    A guard's stop is a result here, not an exception (the CLI exits 3).
    ``resume``: a run directory to continue, as ``--resume``."""
    from ftkit.engine.run import execute
    from ftkit.engine.rundir.resume import run_config

    base = run_config(resume) if resume else None
    cfg, loaded = _configure("run", config, options, plugins, values, base)
    return execute(cfg, loaded, resume=resume)


def evaluate(
    checkpoint: str,
    *,
    config: str | None = None,
    plugins: Iterable[str] = (),
    tta: str = "none",
    calibrate: bool = False,
    split: str = "auto",
    **values: Any,
) -> dict[str, Any]:
    """A checkpoint's metrics as ``ftkit eval --json`` prints them (a run
    directory's own config.toml describes its model; keywords still win)."""
    from ftkit.commands.evaluate import evaluate_checkpoint
    from ftkit.config import run_dir_of

    run_dir = run_dir_of(checkpoint)
    if config is None and run_dir:
        config = str(run_dir / "config.toml")
    cfg, loaded = _configure("evaluate", config, None, plugins, values)
    return evaluate_checkpoint(checkpoint, cfg, loaded, tta, calibrate, split)


def _configure(
    caller: str,
    config_file: str | None,
    options: Mapping[str, Any] | None,
    plugin_modules: Iterable[str],
    values: dict[str, Any],
    base: Mapping[str, Any] | None = None,
) -> tuple[Config, Plugins]:
    """The CLI's ``make_config`` (which also refuses a misspelled keyword,
    knowing the plugins' options), its errors prefixed with the function."""
    from ftkit.plugins.manager import Plugins

    assignments = tuple(f"{key}={_text(value)}" for key, value in (options or {}).items())
    try:
        config = make_config(config_file, assignments, tuple(plugin_modules), values, base=base)
    except UsageError as exc:
        raise UsageError(f"ftkit.{caller}: {exc}") from None
    return config, Plugins(config.plugins)


def _text(value: Any) -> str:
    """A strategy option as ``-o KEY=VALUE`` spells it."""
    return str(value).lower() if isinstance(value, bool) else str(value)
