"""The ``ftkit`` command line (click).

``--help``, ``strategies`` and ``plugins`` never import torch: commands that
need it import inside their bodies. Every error a user can cause ends as one
line on stderr and exit code 2; a guard stop is exit code 3.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from ftkit.cli.options import (
    PluginOptionsCommand,
    check_plot,
    eval_options,
    plot_option,
    plugin_option,
    run_options,
)
from ftkit.cli.tools import advise, lr_find
from ftkit.cli.weights import diff, interpolate, soup
from ftkit.config import check_output_dir, run_dir_of
from ftkit.configure import make_config
from ftkit.errors import FtkitError, UsageError
from ftkit.plugins.manager import Plugins
from ftkit.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ftkit")
def cli() -> None:
    """Fine-tune vision models with named strategies; see every effective
    learning rate before training.

    \b
    ftkit plan --strategy two-stage --lr 1e-5 -o lr_scale=0.3
    ftkit run  --strategy two-stage --lr 1e-5
    """


for command in (diff, interpolate, soup, lr_find, advise):  # in cli/weights.py and cli/tools.py
    cli.add_command(command)


@cli.command(cls=PluginOptionsCommand)
@run_options
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@plot_option("every group's LR over the run's steps")
def plan(config_file, assignments, plugin_modules, as_json, plot, **values):
    """Print the plan that 'ftkit run' would execute, and its LR warnings."""
    from ftkit.plan_report import plan_table
    from ftkit.prepare import prepare_run

    config = make_config(config_file, assignments, plugin_modules, values)
    check_plot(plot)
    plugins = Plugins(config.plugins)
    # The same checks as 'ftkit run': what run would refuse, plan refuses.
    prepared = prepare_run(config, plugins)
    if plot:
        from ftkit.plan_report import plot_plan

        steps = _steps_per_epoch(prepared)
        plot_plan(prepared.plan, steps, plot)
    if as_json:
        click.echo(json.dumps({**prepared.plan.to_json(), **prepared.start_json()}, indent=2))
    else:
        click.echo(
            plan_table(prepared.plan, prepared.anatomy, prepared.config, prepared.start_lines())
        )


def _steps_per_epoch(prepared: Any) -> int:
    """What the run will take: one process, as ``ftkit run`` without torchrun."""
    from ftkit.plan.stages import steps_per_epoch

    config = prepared.config
    return steps_per_epoch(len(prepared.data.train), config.batch_size, config.accumulate)


@cli.command(cls=PluginOptionsCommand)
@run_options
@click.option(
    "--resume",
    type=click.Path(file_okay=False),
    help="continue the run in RUN_DIR from its last checkpoint",
)
def run(config_file, assignments, plugin_modules, resume, **values):
    """Train: execute the plan and write a run directory."""
    from ftkit.engine.run import start
    from ftkit.engine.rundir.resume import run_config

    if resume:
        # The run's own options are the base; what is given now goes on top.
        config = make_config(
            config_file,
            assignments,
            plugin_modules,
            values,
            base=run_config(resume),
            where=f"{resume}/config.toml",
        )
    else:
        config = make_config(config_file, assignments, plugin_modules, values)
    sys.exit(start(config, Plugins(config.plugins), resume=resume))


@cli.command(name="eval", cls=PluginOptionsCommand)
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(),
    help="a run directory, or a weights file (.safetensors)",
)
@eval_options
@click.option(
    "--tta",
    type=click.Choice(["none", "flip"]),
    default="none",
    show_default=True,
    help="test-time augmentation: 'flip' averages the softmax over each image and its "
    "left-right flip",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="classification: fit a temperature on the validation split, report ECE and NLL "
    "before and after, and store it in RUN_DIR/calibration.json",
)
@click.option(
    "--split",
    type=click.Choice(["auto", "val", "train", "all"]),
    default="auto",
    show_default=True,
    help="the images scored; auto: the run's own data folder by its validation split, "
    "another folder whole unless it has train/ and val/ (then val/)",
)
@plot_option("the confusion matrix")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
def eval_(checkpoint, config_file, plugin_modules, tta, calibrate, split, plot, as_json, **values):
    """Metrics of a checkpoint on a dataset (a test folder whole), per class too."""
    from ftkit.commands.evaluate import evaluate_checkpoint

    # A run's own config describes its model; options given here still win.
    run_dir = run_dir_of(checkpoint)
    if not config_file and run_dir:
        config_file = str(run_dir / "config.toml")
    config = make_config(config_file, (), plugin_modules, values)
    check_plot(plot)  # refused before the work, not after it
    # positional: tests stand in for evaluate_checkpoint with a plain function
    metrics = evaluate_checkpoint(
        checkpoint, config, Plugins(config.plugins), tta, calibrate, split
    )
    for note in metrics.pop("notes", []):
        click.echo(f"ftkit: note: {note}", err=True)
    if plot:
        from ftkit.commands.evaluate import plot_confusion

        plot_confusion(metrics, plot)
    if as_json:
        from ftkit.engine.summary import json_text

        click.echo(json_text(metrics, indent=2))
        return
    for key, value in metrics.items():
        if not isinstance(value, list):
            click.echo(
                f"{key:>16}  {value:.4f}" if isinstance(value, float) else f"{key:>16}  {value}"
            )
    from ftkit.commands.evaluate import per_class_table

    table = per_class_table(metrics)
    if table:
        click.echo("")
        click.echo(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@plugin_option
def strategies(as_json, plugin_modules):
    """List the registered strategies, their options and their plugins."""
    plugins = Plugins(plugin_modules)
    rows = []
    for entry in plugins.strategies:
        info = plugins.info_for(entry.plugin)
        rows.append(
            {
                **entry.value.describe(),
                "plugin": info.name,
                "distribution": info.distribution,
                "version": info.version,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = f"{row['distribution']} {row['version']}" if row["distribution"] else "local"
        click.echo(f"{row['name']:<16} {row['description']}  [{row['plugin']}, {where}]")
        for o in row["options"]:
            click.echo(f"    {o['name']:<16} {o['type']:<6} {o['default']!s:<10} {o['help']}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@plugin_option
def plugins(as_json, plugin_modules):
    """List the loaded plugins with their distribution, version and hooks."""
    infos = Plugins(plugin_modules).info()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "distribution": i.distribution,
                        "version": i.version,
                        "hooks": list(i.hooks),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return
    for i in infos:
        where = f"{i.distribution} {i.version}" if i.distribution else "local"
        click.echo(f"{i.name:<34} {where:<16} {', '.join(i.hooks)}")


@cli.group()
def data():
    """Dataset tools."""


@data.command(name="shapes")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--task",
    type=click.Choice(["segmentation", "classification"]),
    default="segmentation",
    show_default=True,
)
@click.option("--image-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--num-samples", type=click.IntRange(min=1), default=384, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
def data_shapes(directory, task, image_size, num_samples, seed):
    """Write the built-in shapes dataset as a folder, to show the layout."""
    from ftkit.data.shapes import write_shapes

    check_output_dir(directory, "DIRECTORY")
    try:
        write_shapes(
            directory, task=task, image_size=image_size, num_samples=num_samples, seed=seed
        )
    except OSError as exc:  # a full disk, or a place even root cannot write (/proc)
        raise UsageError(f"cannot write to '{directory}': {exc.strerror or exc}") from None
    click.echo(f"wrote {task} shapes to {directory}")


def _click_message(exc: click.ClickException) -> str:
    """Click's message, naming the environment variable when the bad value came
    from one (click itself always names the option)."""
    param, ctx = getattr(exc, "param", None), getattr(exc, "ctx", None)
    if isinstance(exc, click.BadParameter) and param is not None and ctx is not None:
        source = ctx.get_parameter_source(param.name)
        envvar = getattr(param, "envvar", None)
        if source == click.core.ParameterSource.ENVIRONMENT and isinstance(envvar, str):
            return f"invalid value in the environment variable {envvar}: {exc.message}"
    return exc.format_message()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="ftkit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("ftkit: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"ftkit: error: {_click_message(exc)}", err=True)
        sys.exit(2)
    except FtkitError as exc:
        click.echo(f"ftkit: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        if os.environ.get("FTKIT_DEBUG"):
            raise
        import traceback

        traceback.print_exc()
        click.echo(
            "ftkit: internal error (the traceback above is a bug in ftkit or a "
            "plugin; please report it)",
            err=True,
        )
        sys.exit(1)
