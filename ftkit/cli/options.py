"""The command-line options ``ftkit`` commands share: every ``Config`` field
as an option (and its ``FTKIT_`` variable), ``--config``, ``-o`` and
``--plugin``. ``ftkit/configure.py`` makes them one ``Config``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ftkit.config import (
    check_output_file,
    field_type,
    flag_of,
    option_fields,
)
from ftkit.errors import UsageError

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


def run_options(
    command: Callable[..., Any], only: tuple[str, ...] | None = None
) -> Callable[..., Any]:
    """The options shared by run and plan (all of ``Config``), and eval (``only``)."""
    for f in reversed(option_fields()):
        if only is not None and f.name not in only:
            continue
        flag = flag_of(f)
        envvar = "FTKIT_" + flag.lstrip("-").replace("-", "_").upper()
        kind = field_type(f)
        default = f.default
        shown = (
            f"[default: {default}]"
            if default is not None and "[default" not in f.metadata["help"]
            else ""
        )
        help_text = f"{f.metadata['help']} {shown}".strip()
        if kind is bool:
            decl = [f"{flag}/--no-{flag[2:]}", f.name]
            command = click.option(*decl, default=None, envvar=envvar, help=help_text)(command)
        else:
            off = f.metadata.get("off")
            if off is not None:  # a former boolean's switch, kept: --no-augment
                command = click.option(
                    f"--no-{flag[2:]}",
                    f.name,
                    flag_value=off,
                    default=None,
                    help=f"same as {flag} {off}",
                )(command)
            ctype = {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
            if f.metadata.get("choices"):
                ctype = click.Choice(f.metadata["choices"])
            command = click.option(
                flag,
                f.name,
                type=ctype,
                default=None,
                envvar=envvar,
                help=help_text,
                metavar=None if f.metadata.get("choices") else kind.__name__.upper(),
            )(command)
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
