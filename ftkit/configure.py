"""One ``Config`` from its sources: a ``--config`` file, the command line (or
the Python API's keywords), ``-o`` strategy options, and what a ``--from``
run's own ``config.toml`` decides. The CLI and ``ftkit.api`` both come here,
so both validate the same way, plugins' options (``ftkit_add_options``)
included: the plugins to ask are the config file's ``plugins = [...]``, the
``--plugin`` modules, ``FTKIT_PLUGINS`` and the installed entry points."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ftkit.config import (
    FOLLOWED,
    Config,
    build_config,
    check_keys,
    option_fields,
    plugins_of,
    read_file,
    read_run_config,
    run_dir_of,
)
from ftkit.data.load import is_folder
from ftkit.errors import UsageError, did_you_mean
from ftkit.plan.options import parse_assignments
from ftkit.plugins.manager import Plugins


def make_config(
    config_file: str | None,
    assignments: tuple[str, ...],
    plugin_modules: tuple[str, ...],
    values: dict[str, Any],
    *,
    base: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> Config:
    """``values``: options by name (click's params, the API's keywords), ``Config``'s
    and the plugins' own; None is not given. ``base``: a run's own ``config.toml``
    that ``run --resume`` continues, under the file and ``values`` (no ``--from``
    run is followed then); ``where`` names the source in errors."""
    file_values = read_file(config_file) if config_file else {}
    where = where or config_file or "command line"
    modules = plugins_of(file_values, f"config file '{config_file}'") if config_file else ()
    if base is not None and "plugins" not in file_values:
        modules = plugins_of(dict(base), where)
    plugin_options = Plugins((*modules, *plugin_modules)).option_list()
    names = [o.name for o in plugin_options]
    if config_file:
        check_keys(file_values, config_file, names)
    check_values(values, names)
    if base is not None:
        file_values = {**base, **file_values}
    elif "start_from" in values:  # a command that takes --from: run, plan, lr-find
        file_values = follow_baseline(file_values, values)
    return build_config(
        file_values,
        values,
        parse_assignments(assignments),
        plugin_modules,
        where=where,
        plugin_options=plugin_options,
    )


def check_values(values: Mapping[str, Any], plugin_options: list[str]) -> None:
    """Refuse a keyword that names no option (a misspelling in the Python API)."""
    known = [f.name for f in option_fields()] + plugin_options
    for key in values:
        if key not in known:
            raise UsageError(f"unknown option '{key}'{did_you_mean(key, known)}")


def follow_baseline(file_values: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``file_values`` completed by the ``--from`` run's own ``config.toml``: each of
    ``FOLLOWED`` not given here (a given one that differs is a plan warning, see
    ``ftkit.prepare.baseline_differences``). A different ``--val-fraction`` on the
    same folder is refused: it would move baseline training images into validation."""
    start = values.get("start_from") or file_values.get("from") or file_values.get("start_from")
    run_dir = run_dir_of(start) if start else None
    if run_dir is None:
        return file_values
    saved = read_run_config(run_dir)
    merged = dict(file_values)
    for key in FOLLOWED:
        if key in saved and values.get(key) is None and key not in file_values:
            merged[key] = saved[key]

    def effective(key: str) -> Any:
        return values[key] if values.get(key) is not None else merged.get(key)

    data = effective("data")
    data = os.path.abspath(data) if isinstance(data, str) and is_folder(data) else data
    fraction = effective("val_fraction")
    if data == saved.get("data") and "val_fraction" in saved and fraction != saved["val_fraction"]:
        raise UsageError(
            f"--val-fraction {fraction} differs from the --from run's "
            f"{saved['val_fraction']} on the same data: its training images would be "
            f"scored as validation; keep {saved['val_fraction']}"
        )
    return merged
