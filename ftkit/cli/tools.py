"""Commands that help choose before training: ``ftkit lr-find`` (the base LR
for a plan) and ``ftkit advise`` (a strategy for a data set). Both write
nothing but what ``--plot`` asks for, and end with the command to run."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click
from click.core import ParameterSource

from ftkit.cli.options import PluginOptionsCommand, check_plot, plot_option, run_options
from ftkit.configure import make_config
from ftkit.plugins.manager import Plugins


def given_options(ctx: click.Context, leave_out: set[str]) -> list[str]:
    """The options of ``ctx``'s command given on its command line, as words,
    without those named in ``leave_out``."""
    words: list[str] = []
    seen: set[str] = set()
    for param in ctx.command.get_params(ctx):  # the plugins' options too
        name = param.name or ""
        if name in leave_out or name in seen or not isinstance(param, click.Option):
            continue
        if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        seen.add(name)
        value = ctx.params[name]
        if param.is_bool_flag and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                words += [param.opts[0], str(item)]
        else:
            flag = next(o for o in param.opts if o.startswith("--"))
            words += [flag, str(value)]
    return words


LR_FIND_OWN = {
    "start_lr",
    "end_lr",
    "steps",
    "stage",
    "rule",
    "smooth",
    "diverge",
    "plot",
    "as_json",
}


@click.command(name="lr-find", cls=PluginOptionsCommand)
@run_options
@click.option(
    "--start-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-7,
    show_default=True,
    help="the base LR the sweep starts at",
)
@click.option(
    "--end-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="the base LR the sweep ends at, unless it diverges first",
)
@click.option(
    "--steps",
    type=click.IntRange(min=10),
    default=100,
    show_default=True,
    help="optimizer steps (points of the sweep)",
)
@click.option(
    "--stage",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="the stage of the plan to sweep (1 = the first), from the run's start weights",
)
@click.option(
    "--rule",
    type=click.Choice(["valley", "minimum", "steepest"]),
    default="valley",
    show_default=True,
    help="valley: halfway into the smoothed loss's longest fall; minimum: a tenth of the LR "
    "at its minimum; steepest: where it falls fastest",
)
@click.option(
    "--smooth",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.98,
    show_default=True,
    help="the loss's moving-average factor",
)
@click.option(
    "--diverge",
    type=click.FloatRange(min=1, min_open=True),
    default=4.0,
    show_default=True,
    help="stop when the smoothed loss passes this times its minimum",
)
@plot_option("loss against the base LR, with the suggestion")
@click.option("--json", "as_json", is_flag=True, help="print the sweep and suggestion as JSON")
@click.pass_context
def lr_find(
    ctx,
    config_file,
    assignments,
    plugin_modules,
    start_lr,
    end_lr,
    steps,
    stage,
    rule,
    smooth,
    diverge,
    plot,
    as_json,
    **values,
):
    """Sweep the base LR through a stage of the plan (every group at its plan
    ratio), suggest one and print the 'ftkit run' command that uses it.
    Writes no run directory; weights, optimizer and RNG are put back."""
    from ftkit.commands.lr_find import find_lr, plot_sweep
    from ftkit.plan.units import fmt_lr

    config = make_config(config_file, assignments, plugin_modules, values)
    check_plot(plot)
    finding = find_lr(
        config, Plugins(config.plugins), stage=stage, start=start_lr, end=end_lr, steps=steps,
        rule=rule, smooth=smooth, diverge=diverge,
    )  # fmt: skip
    if plot:
        plot_sweep(finding, plot)
    lr = fmt_lr(finding.suggestion)
    command = shlex.join(["ftkit", "run", *given_options(ctx, LR_FIND_OWN | {"lr"}), "--lr", lr])
    report = finding.to_json()
    if as_json:
        click.echo(json.dumps({**report, "command": command}, indent=2))
        return
    groups = ", ".join(f"{name} x{ratio:.3g}" for name, ratio in report["groups"].items())
    sweep = finding.sweep
    click.echo(
        f"strategy '{report['strategy']}', stage {stage} '{report['stage']['name']}': "
        f"every group at its plan ratio to the base LR ({groups})"
    )
    click.echo(
        f"swept the base LR from {fmt_lr(sweep.lrs[0])} over {len(sweep.lrs)} steps; "
        f"stopped: {sweep.stop}"
    )
    other = ", ".join(f"{k} {fmt_lr(v)}" for k, v in finding.suggestions.items() if k != rule)
    click.echo(f"suggested base LR: {lr} ({rule} rule; {other})")
    lint = report["lint"]
    click.echo("LR lint at the suggestion: " + ("no warnings" if not lint else "; ".join(lint)))
    click.echo(f"run it:\n  {command}")


ADVISE_OPTIONS = ("task", "model", "weights", "data", "image_size", "num_samples", "seed",
                  "batch_size", "device", "workers")  # fmt: skip


def advise_options(command: Any) -> Any:
    return run_options(command, only=ADVISE_OPTIONS)


@click.command(cls=PluginOptionsCommand)
@advise_options
@click.option("--json", "as_json", is_flag=True, help="print the measurements and advice as JSON")
@click.pass_context
def advise(ctx, config_file, plugin_modules, as_json, **values):
    """Recommend a strategy, base LR and epochs for a data set and weights
    (seed 001's guide: data size x similarity to the pretraining domain,
    measured by a linear probe), with the commands to run."""
    from ftkit.advise import SIZE_REASONS, alternative, domain_of, size_of, strategy_words
    from ftkit.advise import advise as pick
    from ftkit.commands.probe import probe

    config = make_config(config_file, (), plugin_modules, values)
    plugins = Plugins(config.plugins)
    if config.weights:
        prepared, scores = probe(config, plugins)
        error_removed: float | None = scores.error_removed
    else:
        from ftkit.prepare import prepare

        prepared, scores, error_removed = prepare(config, plugins), None, None
    data = prepared.data
    train_images = len(data.train)  # type: ignore[arg-type]
    counts = data.label_counts()
    advice = pick(train_images, error_removed)
    other = alternative(train_images, error_removed)
    base = given_options(ctx, {"as_json"})
    words = strategy_words(advice)
    commands = {
        verb: shlex.join(["ftkit", verb, *base, *words]) for verb in ("plan", "run", "lr-find")
    }
    report: dict[str, Any] = {
        "train_images": train_images,
        "val_images": len(data.val),  # type: ignore[arg-type]
        "class_names": data.class_names,
        "label_counts": counts,  # images (classification) or pixels (segmentation) per class
        "size": size_of(train_images),
        "probe": None if scores is None else {**vars(scores), "error_removed": error_removed},
        "domain": domain_of(error_removed),
        "advice": _advice_json(advice),
        "alternative": _advice_json(other) if other else None,
        "commands": commands,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(_data_line(report))
    click.echo(f"size: {report['size']} ({SIZE_REASONS[report['size']]})")
    click.echo(f"domain: {_domain_line(scores)}")
    click.echo(
        f"advice: {' '.join(strategy_words(advice))}\n"
        f"  guide: {advice.cell}: {advice.why}\n"
        f"  LR and epochs: {advice.lr_row}"
    )
    if other:
        click.echo(
            f"close to the border between the guide's cells: for '{other.cell}' it would be "
            f"{' '.join(strategy_words(other))}"
        )
    click.echo(f"check the plan: {commands['plan']}")
    click.echo(f"train:          {commands['run']}")
    click.echo(f"tune the LR:    {commands['lr-find']}")


def _advice_json(advice: Any) -> dict[str, Any]:
    return {**vars(advice), "options": list(advice.options)}


def _data_line(report: dict[str, Any]) -> str:
    names, counts = report["class_names"], report["label_counts"]
    head = (
        f"data: {report['train_images']} training images, {report['val_images']} validation, "
        f"{len(names)} classes"
    )
    if report["train_images"] == sum(counts):  # a label per image: classification
        per_class = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True))
        return f"{head}; training images per class: {per_class}"
    total = sum(counts) or 1
    shares = ", ".join(f"{n} {c / total:.1%}" for n, c in zip(names, counts, strict=True))
    return f"{head}; share of the training pixels: {shares}"


def _domain_line(scores: Any) -> str:
    from ftkit.advise import NEAR, domain_of

    if scores is None:
        return "not measured: no --weights, the network starts from random initialisation"
    verdict = domain_of(scores.error_removed)
    return (
        f"{verdict}: a linear probe on the frozen pretrained features reaches balanced accuracy "
        f"{scores.pretrained:.3f}, on the same network with random weights {scores.random:.3f} "
        f"(chance {scores.chance:.3f}); the pretraining removes {scores.error_removed:.0%} of "
        f"the random features' error (near from {NEAR:.0%}; {scores.train_samples} training and "
        f"{scores.val_samples} validation images probed)"
    )
