"""Loading plugins: built-ins, entry points, and local modules, in that order.

Built-in plugins are modules of ftkit registered exactly like third-party ones.
Third-party packages declare an entry point in the ``ftkit`` group; local
modules come from ``--plugin MODULE`` or ``FTKIT_PLUGINS=a,b``. Setting
``FTKIT_DISABLE_PLUGIN_AUTOLOAD=1`` skips the entry points.

Nothing here imports torch: ``ftkit strategies`` must start fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from typing import Any

import pluggy

from ftkit.errors import PluginError
from ftkit.plugins import hookspecs
from ftkit.registry import Registry, registered_value

BUILTIN_PLUGINS = (
    "ftkit.strategies.full",
    "ftkit.strategies.freeze",
    "ftkit.strategies.discriminative",
    "ftkit.strategies.llrd",
    "ftkit.strategies.two_stage",
    "ftkit.strategies.gradual",
    "ftkit.strategies.loss_switch",
    "ftkit.models.torchvision",
    "ftkit.models.timm",
    "ftkit.models.smp",
    "ftkit.models.generic",
    "ftkit.losses",
    "ftkit.data.builtin",
    "ftkit.loggers.tensorboard",
)

hookimpl = pluggy.HookimplMarker("ftkit")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]

    def describe(self) -> str:
        if self.distribution:
            return f"'{self.name}' ({self.distribution} {self.version})"
        return f"'{self.name}'"


class Plugins:
    """The loaded plugins and the registries they fill, built on demand."""

    def __init__(self, local_modules: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager("ftkit")
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, tuple[str, str]] = {}
        for module in BUILTIN_PLUGINS:
            self._register(importlib.import_module(module), module)
        if not os.environ.get("FTKIT_DISABLE_PLUGIN_AUTOLOAD"):
            self._load_entry_points()
        env_modules = [m.strip() for m in os.environ.get("FTKIT_PLUGINS", "").split(",")]
        for module in [*env_modules, *local_modules]:
            if module and not self.pm.has_plugin(module):
                self._register(_import_local(module), module)

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group="ftkit"):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            where = f"'{ep.name}'" + (f" ({dist} {version})" if dist else "")
            if self.pm.has_plugin(ep.name):
                continue  # the same distribution seen twice on sys.path
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {where} failed to import: {_reason(exc)}") from exc
            if dist:
                self._dists[ep.name] = (dist, version or "")
            self._register(plugin, ep.name, where)

    def _register(self, plugin: Any, name: str, where: str | None = None) -> None:
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {where or repr(name)} is invalid: {_reason(exc)}") from exc

    def info(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])
            dist, version = self._dists.get(
                name, ("ftkit", _ftkit_version()) if name.startswith("ftkit.") else (None, None)
            )
            infos.append(PluginInfo(name, dist, version, tuple(hooks)))
        return infos

    def info_for(self, plugin_name: str) -> PluginInfo:
        return next(i for i in self.info() if i.name == plugin_name)

    def describe(self, plugin_name: str) -> str:
        return self.info_for(plugin_name).describe()

    def collect(self, hook_name: str, kind: str) -> Registry[Any]:
        """Call one registration hook plugin by plugin, so that every entry
        (and every error) is attributed to the plugin that made it."""
        registry: Registry[Any] = Registry(kind)
        caller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():

            def register(obj: Any, *rest: Any, _plugin: str = impl.plugin_name) -> None:
                name, value = registered_value(obj, *rest)
                registry.add(name, value, _plugin)

            kwargs = {"register": register}
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {self.describe(impl.plugin_name)} failed in {hook_name}: "
                    f"{_reason(exc)}"
                ) from exc
        return registry

    @cached_property
    def strategies(self) -> Registry[Any]:
        return self.collect("ftkit_register_strategies", "strategy")

    @cached_property
    def models(self) -> Registry[Any]:
        return self.collect("ftkit_register_models", "model family")

    @cached_property
    def anatomies(self) -> Registry[Any]:
        return self.collect("ftkit_register_anatomies", "anatomy")

    @cached_property
    def losses(self) -> Registry[Any]:
        return self.collect("ftkit_register_losses", "loss")

    @cached_property
    def datasets(self) -> Registry[Any]:
        return self.collect("ftkit_register_datasets", "dataset")

    @property
    def hook(self) -> Any:
        return self.pm.hook


def _import_local(module: str) -> Any:
    # Like `python -m`, let a module in the current directory be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise PluginError(f"plugin module '{module}' not found") from exc
        raise PluginError(f"plugin '{module}' failed to import: {_reason(exc)}") from exc
    except Exception as exc:
        raise PluginError(f"plugin '{module}' failed to import: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ftkit_version() -> str:
    from ftkit import __version__

    return __version__
