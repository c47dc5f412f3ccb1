"""What the package declares is true: the Python it needs, and the built-in
plugin modules the manager registers."""

from __future__ import annotations

import configparser
import importlib
import inspect
import pkgutil
import re
import tomllib

from ftkit.plugins.manager import BUILTIN_PLUGINS
from tests.conftest import ROOT


def hook_functions(module: object) -> list[str]:
    """The module's own functions marked with ``@hookimpl``."""
    return [
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and hasattr(value, "ftkit_impl")
    ]


def test_every_module_with_hooks_is_a_builtin_plugin_and_every_builtin_has_hooks():
    with_hooks = []
    for package in ("strategies", "models", "loggers"):
        path = ROOT / "ftkit" / package
        for info in pkgutil.iter_modules([str(path)]):
            name = f"ftkit.{package}.{info.name}"
            if hook_functions(importlib.import_module(name)):
                with_hooks.append(name)
    strategies = [
        f"ftkit.strategies.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "ftkit/strategies")])
    ]
    assert set(strategies) <= set(with_hooks)  # a strategy module that registers nothing is dead
    assert set(with_hooks) <= set(BUILTIN_PLUGINS)
    assert all(hook_functions(importlib.import_module(m)) for m in BUILTIN_PLUGINS)


def test_requires_python_is_what_the_code_needs_and_tox_tests_no_older_one():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"  # tomllib is 3.11's
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    versions = re.findall(r"py3(\d+)", tox["tox"]["env_list"])
    assert versions and min(int(v) for v in versions) == 11
    assert tox["tox"]["skip_missing_interpreters"] == "false"
    for plugin in ("ftkit-bitfit", "ftkit-transformers"):
        meta = tomllib.loads((ROOT / "plugins" / plugin / "pyproject.toml").read_text())
        assert meta["project"]["requires-python"] == ">=3.11"
