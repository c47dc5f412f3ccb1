"""The command-line options ``ftkit`` commands share: every ``Config`` field
as an option (and its ``FTKIT_`` variable), ``--config``, ``-o`` and
``--plugin``, and the plugins' own options (``PluginOptionsCommand``).
``ftkit/configure.py`` makes them one ``Config``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from ftkit.config import (
    check_output_file,
    field_type,
    flag_of,
    option_fields,
    plugins_of,
    read_file,
    run_dir_of,
)
from ftkit.errors import PluginError, UsageError
from ftkit.plugins.manager import Plugins

# What eval needs: the model, the data and how to read it, and where to compute. The
# run's own config.toml supplies the rest (strategy, loss).
EVAL_OPTIONS = (
    "task",
    "model",
    "num_classes",
    "data",
    "val_fraction",
    "image_size",
    "resize",
    "crop",
    "eval_mode",
    "num_samples",
    "seed",
    "loss",
    "batch_size",
    "amp",
    "device",
    "workers",
)


def option_specs(
    name: str,
    flag: str,
    kind: type,
    default: Any,
    help: str,
    choices: tuple[str, ...] | None = None,
    off: str | None = None,
) -> list[tuple[list[str], dict[str, Any]]]:
    """The click options (declarations, settings) of one ``Config`` field or
    plugin option, in the order ``--help`` lists them: ``FLAG`` with its
    ``FTKIT_`` variable (a bool's with its ``--no-`` switch), then the
    ``--no-NAME`` of a former boolean (``off``). Each defaults to None (not
    given), so a config file's value shows through."""
    envvar = "FTKIT_" + flag.lstrip("-").replace("-", "_").upper()
    shown = f"[default: {default}]" if default is not None and "[default" not in help else ""
    help_text = f"{help} {shown}".strip()
    if kind is bool:
        return [
            (
                [f"{flag}/--no-{flag[2:]}", name],
                {"default": None, "envvar": envvar, "help": help_text},
            )
        ]
    ctype: Any = (
        click.Choice(choices)
        if choices
        else {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
    )
    specs: list[tuple[list[str], dict[str, Any]]] = [
        (
            [flag, name],
            {
                "type": ctype,
                "default": None,
                "envvar": envvar,
                "help": help_text,
                "metavar": None if choices else kind.__name__.upper(),
            },
        )
    ]
    if off is not None:  # a former boolean's switch, kept: --no-augment
        specs.append(
            (
                [f"--no-{flag[2:]}", name],
                {"flag_value": off, "default": None, "help": f"same as {flag} {off}"},
            )
        )
    return specs


def run_options(
    command: Callable[..., Any], only: tuple[str, ...] | None = None
) -> Callable[..., Any]:
    """The options shared by run and plan (all of ``Config``), and eval (``only``).
    The plugins' own come at parse time (``PluginOptionsCommand``)."""
    for f in reversed(option_fields()):
        if only is not None and f.name not in only:
            continue
        specs = option_specs(
            f.name,
            flag_of(f),
            field_type(f),
            f.default,
            f.metadata["help"],
            f.metadata.get("choices"),
            f.metadata.get("off"),
        )
        for decls, settings in reversed(specs):
            command = click.option(*decls, **settings)(command)
    command = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        envvar="FTKIT_CONFIG",
        help="TOML file with options and a [strategy] table",
    )(command)
    if only is None:
        command = click.option(
            "-o",
            "--set",
            "assignments",
            multiple=True,
            metavar="KEY=VALUE",
            help="strategy option (repeatable); see 'ftkit strategies'",
        )(command)
    return plugin_option(command)


class PluginOptionsCommand(click.Command):
    """A command that also takes the plugins' options (``ftkit_add_options``).

    Click declares options when a module is imported, before anyone knows which
    plugins a command line loads; so each parse first reads the command line for
    the plugins (``--plugin``, ``FTKIT_PLUGINS``, the ``plugins`` of a ``--config``
    file or of the run that ``--resume`` or ``--checkpoint`` names, and the entry
    points), and their options join this parse's parameters only: the command
    itself is never changed, and the next parse (another ``main`` in the same
    process) starts afresh. They come after ftkit's own in ``--help``. A plugin
    option that one of these commands has already (``--resume``, lr-find's
    ``--steps``) is refused by every command, so that each takes the same ones.
    """

    commands: list[PluginOptionsCommand] = []  # run, plan, lr-find, eval, advise

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        PluginOptionsCommand.commands.append(self)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[self._key] = self.plugin_params(ctx, args)
        return super().parse_args(ctx, args)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        extra = ctx.meta.get(self._key, [])
        help_option = self.get_help_option(ctx)
        if not extra or not params or params[-1] is not help_option:
            return [*params, *extra]
        return [*params[:-1], *extra, params[-1]]

    @property
    def _key(self) -> str:
        return f"ftkit.plugin_params.{self.name}"

    def plugin_params(self, ctx: click.Context, args: list[str]) -> list[click.Parameter]:
        plugins = Plugins(plugins_named(args))
        # what each word is already: the owner of a flag or parameter name
        taken = dict.fromkeys([*self.get_help_option_names(ctx), "help"], "every command")
        for command in [self, *PluginOptionsCommand.commands]:  # this command's named first
            for p in command.params:
                for word in (p.name or "", *p.opts, *p.secondary_opts):
                    taken.setdefault(word, f"'ftkit {command.name}'")
        out: list[click.Parameter] = []
        for entry in plugins.options:
            option = entry.value
            assert option.flag is not None  # given by Plugins.options
            kind = str if option.convert is not None else option.type  # it parses the text
            for decls, settings in option_specs(
                option.name, option.flag, kind, option.default,
                f"{option.help} (plugin {entry.plugin})", option.choices,
            ):  # fmt: skip
                param = click.Option(decls, **settings)
                for word in (param.name, *param.opts, *param.secondary_opts):
                    if word in taken:
                        raise PluginError(
                            f"plugin {plugins.describe(entry.plugin)} adds option "
                            f"{option.name!r} ({option.flag}), which {taken[word]} has already"
                        )
                out.append(param)
        return out


def plugins_named(args: list[str]) -> tuple[str, ...]:
    """The plugin modules a command line loads beside the entry points and
    ``FTKIT_PLUGINS``, as ``make_config`` finds them: a config file's
    ``plugins`` (or else those of the run that ``--resume`` or ``--checkpoint``
    names), then ``--plugin``'s. A file that cannot be read names none here: the
    command's own reading of it says what is wrong."""
    given = _values_of(args, ("--plugin", "--config", "--resume", "--checkpoint"))
    config_file = (given["--config"] or [os.environ.get("FTKIT_CONFIG", "")])[-1]
    runs = [run_dir_of(run) for run in given["--resume"][-1:] + given["--checkpoint"][-1:]]
    for path in [config_file, *(str(r / "config.toml") for r in runs if r is not None)]:
        try:
            values = read_file(path) if path else {}
            if "plugins" in values:
                return (*plugins_of(values, path), *given["--plugin"])
        except UsageError:
            continue
    return tuple(given["--plugin"])


def _values_of(args: list[str], names: tuple[str, ...]) -> dict[str, list[str]]:
    """The values given to each option of ``names`` (``--name VALUE`` or
    ``--name=VALUE``), read before click parses ``args``."""
    out: dict[str, list[str]] = {name: [] for name in names}
    words = iter(args)
    for word in words:
        if word == "--":
            break
        name, eq, value = word.partition("=")
        if name in out:
            given = value if eq else next(words, None)
            if given is not None:
                out[name].append(given)
    return out


def eval_options(command: Callable[..., Any]) -> Callable[..., Any]:
    return run_options(command, only=EVAL_OPTIONS)


def plugin_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--plugin",
        "plugin_modules",
        multiple=True,
        metavar="MODULE",
        help="load a plugin module (repeatable); also FTKIT_PLUGINS=a,b",
    )(command)


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def plot_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--plot FILE``: ``what`` drawn into an image (matplotlib)."""
    return click.option(
        "--plot",
        type=click.Path(dir_okay=False),
        help=f"draw {what} into an image: {', '.join(PLOT_SUFFIXES)} (needs matplotlib)",
    )


def check_plot(plot: str | None) -> None:
    """Refuse, before any work, a ``--plot`` that could not be written."""
    if not plot:
        return
    check_output_file(plot, "--plot", PLOT_SUFFIXES)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'ftkit[plot]'") from None
