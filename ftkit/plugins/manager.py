"""Loading plugins: built-ins, entry points, and local modules, in that order.

Built-in plugins are modules of ftkit registered exactly like third-party ones.
Third-party packages declare an entry point in the ``ftkit`` group; local
modules come from ``--plugin MODULE`` or ``FTKIT_PLUGINS=a,b``. Setting
``FTKIT_DISABLE_PLUGIN_AUTOLOAD=1`` skips the entry points, and
``FTKIT_TRACE_PLUGINS=1`` traces every hook call to stderr.

Nothing here imports torch: ``ftkit strategies`` must start fast.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import metadata
from typing import Any, Generic, TypeVar

import pluggy

from ftkit.config import own_names
from ftkit.data.builtin import Dataset
from ftkit.errors import PluginError, UsageError, did_you_mean
from ftkit.losses import Loss
from ftkit.models.family import ModelFamily
from ftkit.optimizers import TIMM, Optimizer
from ftkit.plan.anatomy import AnatomyProvider
from ftkit.plan.options import Option
from ftkit.plan.strategy import Strategy
from ftkit.plugins import hookspecs
from ftkit.registry import Fallback, Registry
from ftkit.tasks import Task

T = TypeVar("T")

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
    "ftkit.tasks",
    "ftkit.optimizers",
)

__all__ = ["BUILTIN_PLUGINS", "Kind", "PluginInfo", "Plugins"]


@dataclass(frozen=True)
class Kind(Generic[T]):
    """One registration hook and the one type it takes."""

    hook: str
    noun: str
    type: type[T]
    fallback: Fallback[T] | None = None


STRATEGIES = Kind("ftkit_register_strategies", "strategy", Strategy)
MODELS = Kind("ftkit_register_models", "model family", ModelFamily)
ANATOMIES = Kind("ftkit_register_anatomies", "anatomy", AnatomyProvider)
LOSSES = Kind("ftkit_register_losses", "loss", Loss)
DATASETS = Kind("ftkit_register_datasets", "dataset", Dataset)
TASKS = Kind("ftkit_register_tasks", "task", Task)
OPTIMIZERS = Kind("ftkit_register_optimizers", "optimizer", Optimizer, fallback=TIMM)
OPTIONS = Kind("ftkit_add_options", "plugin option", Option)

OPTION_TYPES = (str, int, float, bool)
_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_FLAG = re.compile(r"--[a-z][a-z0-9]*(-[a-z0-9]+)*")


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
        if os.environ.get("FTKIT_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        self._dists: dict[str, tuple[str, str]] = {}
        for module in BUILTIN_PLUGINS:
            self._register(importlib.import_module(module), module)
        if not os.environ.get("FTKIT_DISABLE_PLUGIN_AUTOLOAD"):
            self._load_entry_points()
        env_modules = [m.strip() for m in os.environ.get("FTKIT_PLUGINS", "").split(",")]
        for module in [*env_modules, *local_modules]:
            if module and not self.pm.has_plugin(module):
                self._register(_import_local(module), module)
        self._check_pending()

    def _check_pending(self) -> None:
        """A marked function that matches no hook is a typo: it would never run."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            callers = self.pm.get_hookcallers(exc.plugin) or []
            hook = next((c.name for c in callers if not c.has_spec()), "?")
            known = [h for h in vars(hookspecs) if h.startswith("ftkit_")]
            raise PluginError(
                f"plugin {self.describe(name)} defines unknown hook '{hook}'"
                f"{did_you_mean(hook, known)}"
            ) from None

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

    def collect(self, kind: Kind[T]) -> Registry[T]:
        """Call one registration hook plugin by plugin, so that every entry
        (and every error) is attributed to the plugin that made it."""
        registry: Registry[T] = Registry(kind.noun, kind.fallback)
        caller = getattr(self.pm.hook, kind.hook)
        hooktrace = self.pm.trace.root.get("hook")
        for impl in caller.get_hookimpls():
            plugin = impl.plugin_name

            def register(*args: Any, _plugin: str = plugin) -> None:
                obj = self._typed(kind, args, _plugin)
                registry.add(obj.name, obj, _plugin)  # type: ignore[attr-defined]

            hooktrace(kind.hook, {"plugin": plugin})  # written only when tracing
            kwargs = {"register": register}
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {self.describe(plugin)} failed in {kind.hook}: {_reason(exc)}"
                ) from exc
        return registry

    def _typed(self, kind: Kind[T], args: tuple[Any, ...], plugin: str) -> T:
        """The one object a registration hands over, of the hook's own type."""
        if len(args) == 1 and isinstance(args[0], kind.type):
            return args[0]
        got = f"a {type(args[0]).__name__}" if len(args) == 1 else f"{len(args)} arguments"
        wrap = f"ftkit.{kind.type.__name__}"
        if len(args) == 2 and isinstance(args[0], str):  # the (name, callable) of older ftkit
            wrap += f" (register({wrap}({args[0]!r}, ...)))"
        raise PluginError(
            f"plugin {self.describe(plugin)} registered {got} in {kind.hook}; expected an {wrap}"
        )

    @cached_property
    def strategies(self) -> Registry[Strategy]:
        return self.collect(STRATEGIES)

    @cached_property
    def models(self) -> Registry[ModelFamily]:
        return self.collect(MODELS)

    @cached_property
    def anatomies(self) -> Registry[AnatomyProvider]:
        return self.collect(ANATOMIES)

    @cached_property
    def losses(self) -> Registry[Loss]:
        return self.collect(LOSSES)

    @cached_property
    def datasets(self) -> Registry[Dataset]:
        return self.collect(DATASETS)

    @cached_property
    def tasks(self) -> Registry[Task]:
        return self.collect(TASKS)

    @cached_property
    def optimizers(self) -> Registry[Optimizer]:
        return self.collect(OPTIMIZERS)

    @cached_property
    def options(self) -> Registry[Option]:
        """The plugins' command-line options, each with its flag (``--NAME``
        unless it gives one) and checked against ftkit's own and each other's."""
        registry: Registry[Option] = Registry(OPTIONS.noun)
        own = own_names()
        flags: dict[str, str] = {}  # a flag to the plugin that added it
        for entry in self.collect(OPTIONS):
            option = self._checked_option(entry.value, entry.plugin, own)
            for flag in _flags(option):
                if flag in flags:
                    raise PluginError(
                        f"plugin option flag {flag} is added twice: by plugin "
                        f"{self.describe(flags[flag])} and by plugin {self.describe(entry.plugin)}"
                    )
                flags[flag] = entry.plugin
            registry.add(option.name, option, entry.plugin)
        return registry

    def option_list(self) -> list[Option]:
        return [entry.value for entry in self.options]

    def _checked_option(self, option: Option, plugin: str, own: dict[str, str]) -> Option:
        who = f"plugin {self.describe(plugin)} adds option {option.name!r}"
        if not isinstance(option.name, str) or not _NAME.fullmatch(option.name):
            raise PluginError(
                f"{who}: a name is lowercase words joined by '_' (it is also a TOML "
                "key and an environment variable), e.g. 'max_length'"
            )
        if option.type not in OPTION_TYPES:
            kind = getattr(option.type, "__name__", repr(option.type))
            raise PluginError(f"{who}: its type must be str, int, float or bool, got {kind}")
        flag = option.flag or "--" + option.name.replace("_", "-")
        if not _FLAG.fullmatch(flag):
            raise PluginError(f"{who}: its flag must look like --max-length, got {flag!r}")
        option = replace(option, flag=flag)
        for word in (option.name, *_flags(option)):
            if word in own:
                raise PluginError(f"{who} ({flag}), which is ftkit's own option {own[word]}")
        if option.default is not None:
            try:
                option.parse(option.default, "default")
            except UsageError as exc:
                raise PluginError(f"{who} with a default it refuses: {exc}") from None
        return option

    @property
    def hook(self) -> Any:
        return self.pm.hook


def _flags(option: Option) -> tuple[str, ...]:
    """The flags an option takes on the command line: a bool its --no- switch too."""
    assert option.flag is not None
    return (option.flag, f"--no-{option.flag[2:]}") if option.type is bool else (option.flag,)


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
    from ftkit.version import __version__

    return __version__
