"""``ftkit diff``, ``interpolate`` and ``soup``: commands that read finished
runs and compare or mix their weights (commands/diff.py, commands/weight_space.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ftkit.cli.options import check_plot, plot_option, plugin_option
from ftkit.config import check_output_file, run_dir_of
from ftkit.configure import make_config
from ftkit.errors import UsageError
from ftkit.plugins.manager import Plugins


@click.command()
@click.argument("run", type=click.Path())
@click.option(
    "--against",
    type=click.Path(),
    help="weights to compare with (a file or a run) [default: the run's own start]",
)
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
@plot_option("a bar per group")
@plugin_option
def diff(run, against, as_json, plot, plugin_modules):
    """How far a run's best weights moved from where it started, per group and tensor."""
    run_dir, config = _finished_run(run, plot, plugin_modules)
    from ftkit.commands.diff import diff as weight_diff
    from ftkit.commands.diff import diff_table, plot_diff

    report = weight_diff(run_dir, config, Plugins(config.plugins), against)
    if plot:
        plot_diff(report, plot)
    if as_json:
        from ftkit.engine.summary import json_text

        click.echo(json_text(report, indent=2))
    else:
        click.echo(diff_table(report))


def _finished_run(run: str, plot: str | None, plugin_modules: tuple[str, ...]) -> Any:
    """The run directory a command reads, its config, and --plot checked first."""
    run_dir = run_dir_of(run)
    if run_dir is None or not (run_dir / "checkpoints").is_dir():
        raise UsageError(f"'{run}' is not an ftkit run directory (no config.toml, no checkpoints/)")
    check_plot(plot)
    return run_dir, make_config(str(run_dir / "config.toml"), (), plugin_modules, {})


def _alphas(text: str) -> list[float]:
    try:
        alphas = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        alphas = []
    if not alphas or not all(0 <= a <= 1 for a in alphas):
        raise UsageError(f"--alpha expects a comma list of numbers in [0, 1], got '{text}'")
    return alphas


@click.command()
@click.argument("run", type=click.Path())
@click.option(
    "--alpha",
    "alphas",
    default=",".join(f"{i / 10:g}" for i in range(11)),
    show_default=True,
    help="the mixes to score: (1 - a) * start + a * fine-tuned",
)
@click.option(
    "--backbone-only",
    is_flag=True,
    help="mix the backbone only and keep the fine-tuned head (for a new head)",
)
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
@plot_option("the metrics against alpha")
@plugin_option
def interpolate(run, alphas, backbone_only, as_json, plot, plugin_modules):
    """WiSE-FT: score mixes of a run's start and its fine-tune; keep the best."""
    run_dir, config = _finished_run(run, plot, plugin_modules)
    from ftkit.commands.weight_space import interpolate as wise_ft
    from ftkit.commands.weight_space import interpolation_table, plot_interpolation
    from ftkit.engine.summary import json_text

    report = wise_ft(run_dir, config, Plugins(config.plugins), _alphas(alphas), backbone_only)
    for note in report["notes"]:
        click.echo(f"ftkit: note: {note}", err=True)
    (run_dir / "interpolate.json").write_text(json_text(report, indent=2) + "\n")
    if plot:
        plot_interpolation(report, plot)
    click.echo(json_text(report, indent=2) if as_json else interpolation_table(report))


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="the soup's weights, FILE.safetensors (its record beside it, FILE.json)",
)
@click.option("--json", "as_json", is_flag=True, help="print the record as JSON")
@plugin_option
def soup(runs, out, as_json, plugin_modules):
    """Greedy model soup of runs that share a start: average what does not hurt."""
    checked = [_finished_run(run, None, plugin_modules) for run in runs]
    check_output_file(out, "--out", (".safetensors",))
    if Path(out).exists():
        raise UsageError(f"--out '{out}' already exists; choose another name")
    from ftkit.commands.weight_space import soup as greedy_soup
    from ftkit.engine.summary import json_text

    run_dirs, config = [d for d, _ in checked], checked[0][1]
    record = greedy_soup(run_dirs, config, Plugins(config.plugins), Path(out))
    Path(out).with_suffix(".json").write_text(json_text(record, indent=2) + "\n")
    if as_json:
        click.echo(json_text(record, indent=2))
        return
    monitor = record["monitor"]
    for row in record["runs"]:
        click.echo(
            f"{row[monitor]:.4f}  {row['run']}" + ("  (in the soup)" if row["in_soup"] else "")
        )
    click.echo(
        f"greedy soup of {len(record['greedy']['runs'])}: {monitor} "
        f"{record['greedy'][monitor]:.4f}; uniform soup of {len(record['runs'])}: "
        f"{record['uniform'][monitor]:.4f}; weights in {out}"
    )
