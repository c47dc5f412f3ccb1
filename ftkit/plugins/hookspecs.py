"""Every hook ftkit calls, declared, typed and documented in one place.

A plugin is a module (or any object) with functions marked ``@ftkit.hookimpl``
whose names match the hooks below. It may implement any subset, and may omit
arguments it does not need. A marked function whose name is no hook (a typo
such as ``ftkit_register_strategy``) is an error naming the plugin. Built-in
strategies, models, anatomies, losses, datasets, tasks and optimizers are
plugins too, registered through these same hooks.

Registration hooks receive a ``register`` callback and hand it one frozen
object per thing, of the hook's own type (all importable from ``ftkit``):
``Strategy``, ``ModelFamily``, ``AnatomyProvider``, ``Loss``, ``Dataset``,
``Task``, ``Optimizer``, and ``Option`` for ``ftkit_add_options``. Anything
else is an error naming the plugin, the hook and the type expected.
Registration hooks run once per process, when the registry of that kind is
first needed. Lifecycle hooks run inside ``ftkit run``, on the main process
only; each run also registers its own readers for them (the console's
lines, TensorBoard). What a run writes and decides is not a hook: see
``ftkit_epoch_end`` for the order.

``FTKIT_TRACE_PLUGINS=1`` traces every hook call to stderr.

``docs/hooks.md`` is generated from this module by ``tools/gen_hook_docs.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftkit.hooks import hookspec

if TYPE_CHECKING:
    from collections.abc import Callable

    from ftkit.data.builtin import Dataset
    from ftkit.losses import Loss
    from ftkit.models.family import ModelFamily
    from ftkit.optimizers import Optimizer
    from ftkit.plan.anatomy import AnatomyProvider
    from ftkit.plan.options import Option
    from ftkit.plan.stages import Stage
    from ftkit.plan.strategy import Strategy
    from ftkit.plugins.records import EpochRecord, Summary
    from ftkit.plugins.run import Run
    from ftkit.tasks import Task


@hookspec
def ftkit_register_strategies(register: Callable[[Strategy], None]) -> None:
    """Register fine-tuning strategies.

    Call ``register(strategy)`` with an ``ftkit.Strategy`` for each one. The
    strategy's ``name`` is what users pass to ``--strategy``; two plugins
    registering the same name is an error naming both. A strategy only returns
    a plan (stages of parameter groups with absolute learning rates); it never
    trains, so it must not import torch at module level.

    Example::

        @ftkit.hookimpl
        def ftkit_register_strategies(register):
            register(ftkit.Strategy(name="bitfit", description="...", build=build))
    """


@hookspec
def ftkit_register_models(register: Callable[[ModelFamily], None]) -> None:
    """Register model families by the prefix of a model spec.

    Call ``register(ftkit.ModelFamily(prefix, build, named_weights,
    preprocessing, convert))``; ``--model PREFIX:REST`` then calls
    ``build(rest, num_classes=N, task=TASK)``, which returns a
    ``torch.nn.Module`` with randomly initialised weights. The optional
    callables let ``--weights NAME`` (``imagenet``, a library's own names)
    come from the library's cache, give the weights' normalisation and input
    size, and convert foreign checkpoint keys; see ``ftkit.models.family``.
    ``ModelFamily(prefix, build)`` is a whole family without pretrained
    weights. ``task`` is the task's
    ``targets``: 'segmentation' or 'classification'. Built-ins: ``tv``
    (torchvision), ``timm`` and ``smp`` (segmentation-models-pytorch,
    ``smp:ARCH:ENCODER``).
    """


@hookspec
def ftkit_register_anatomies(register: Callable[[AnatomyProvider], None]) -> None:
    """Register anatomies: how a model splits into ordered layer groups.

    Call ``register(ftkit.AnatomyProvider(name, matches, build, priority))``.
    ``matches(model) -> bool`` says whether it knows the model;
    ``build(model) -> Anatomy`` returns its layers from input to output, each
    marked ``backbone`` or ``head``. The matching provider with the highest
    priority wins; the generic fallback has the lowest.
    """


@hookspec
def ftkit_register_losses(register: Callable[[Loss], None]) -> None:
    """Register loss functions by name.

    Call ``register(ftkit.Loss(name, factory))``; ``factory(task=...,
    num_classes=..., class_weights=..., ignore_index=..., label_smoothing=...)``
    returns a callable ``loss(logits, target) -> scalar tensor``. Names combine
    on the command line as weighted sums such as ``0.7*ce+0.3*dice``; ``task``
    is the task's ``targets`` ('segmentation' or 'classification'). A factory
    may say what it honours in attributes: ``takes`` (a set of
    ``class_weights``, ``label_smoothing``; all when absent), ``params`` (what
    a spec such as ``tversky(alpha=0.3)`` may set), ``segmentation_only`` and
    ``soft_targets`` (takes (N, C) class probabilities as targets).
    """


@hookspec
def ftkit_register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register built-in datasets, used as ``--data builtin:NAME``.

    Call ``register(ftkit.Dataset(name, factory))``; ``factory(task=...,
    image_size=..., num_samples=..., seed=...)`` returns an
    ``ftkit.data.DataSplits`` with the train and validation datasets and the
    class names. ``task`` is the task's ``targets`` ('segmentation' or
    'classification').
    """


@hookspec
def ftkit_register_tasks(register: Callable[[Task], None]) -> None:
    """Register tasks, used as ``--task NAME``.

    Call ``register(ftkit.Task(name, targets, monitor, monitors, metrics,
    per_class, ignore_index))``. ``targets`` ('segmentation' or
    'classification') is the kind of label that data, models and losses see;
    the task itself decides the metrics: ``metrics(num_classes,
    ignore_index=, device=)`` returns an object with ``update(logits,
    target)``, ``compute() -> dict`` and a ``state`` tensor (see
    ``ftkit.metrics``). ``monitor`` is the default of ``--monitor``,
    ``monitors`` all it may name, ``per_class`` the per-class key of
    ``compute()`` that the summary shows. Built-ins: ``segmentation``,
    ``classification`` (``ftkit.tasks``).

    A task whose inputs are not images gives ``load_data(spec, model=, seed=,
    num_classes=)``: it opens ``--data`` itself (``model`` is the ``--model``
    spec, for its tokenizer) and returns an ``ftkit.data.DataSplits`` whose
    ``collate`` batches training items (dynamic padding; validation items are
    stacked as they are). When its signature takes ``options=`` (or
    ``**kwargs``) it also gets the plugins' options (``ftkit_add_options``) as a
    dict of name to value. See ``plugins/ftkit-transformers``.

    Example::

        @ftkit.hookimpl
        def ftkit_register_tasks(register):
            register(ftkit.Task("scene", "classification", "val_accuracy",
                                ("val_accuracy", "val_loss"), my_metrics, "f1_per_class"))
    """


@hookspec
def ftkit_register_optimizers(register: Callable[[Optimizer], None]) -> None:
    """Register optimizers, used as ``--optimizer NAME``.

    Call ``register(ftkit.Optimizer(name, build))``; ``build(param_groups)``
    returns a ``torch.optim.Optimizer`` built on those groups (dicts with
    ``params``, ``lr``, ``weight_decay``), keeping each group's own LR. ftkit
    then puts the plan's groups in through ``add_param_group`` at every stage,
    each with its absolute LR. Built-ins: ``adamw``, ``sgd``
    (``ftkit.optimizers``); a name no plugin registers is looked up in timm
    (``timm.optim.list_optimizers()``, built with ``create_optimizer_v2``).
    """


@hookspec
def ftkit_add_options(register: Callable[[Option], None]) -> None:
    """Add command-line options, as pytest's ``pytest_addoption`` does.

    Call ``register(ftkit.Option(name, type, default, help, check=, choices=))``
    for each one. ``name`` (lowercase words joined by ``_``, ``max_length``) is
    the top-level key of a ``--config`` file and gives the flag ``--max-length``
    (unless ``flag=`` names another) and, from the flag as for ftkit's own
    options, the environment variable ``FTKIT_MAX_LENGTH``. ``type`` is ``str``,
    ``int``, ``float`` or ``bool`` (a ``--name/--no-name`` switch).
    ``ftkit run``, ``plan``, ``lr-find``, ``eval`` and ``advise`` take them, and
    their ``--help`` shows them with their defaults. ``Option.parse`` checks every
    value (``check``, ``choices``, ``convert``), wherever it comes from. A name or
    flag that one of ftkit's own options (or another plugin's) has is an error
    naming the plugin, as is a default its own check refuses.

    The values, defaults filled in, are ``config.plugin_options`` (name to value,
    every plugin's): the run's ``config.toml`` records them as top-level keys,
    ``--resume`` and ``eval`` read them back (a change is refused on resume, as
    for ftkit's options that change the training). ``Task.load_data`` receives
    the dict as ``options=`` when its signature takes it; lifecycle hooks read
    ``run.config.plugin_options``.

    Example::

        @ftkit.hookimpl
        def ftkit_add_options(register):
            register(ftkit.Option("max_length", int, 128, "tokens kept per text",
                                  check=lambda n: None if 2 <= n <= 512 else "must be 2..512"))
    """


@hookspec
def ftkit_run_start(run: Run) -> None:
    """Called once before the first training step (and again on resume).

    ``run`` gives the resolved config, the plan, the model and the run
    directory (``run.dir``). Loggers open their writers here.
    """


@hookspec
def ftkit_stage_start(run: Run, stage: Stage, index: int) -> None:
    """Called when a stage of the plan begins, after its parameters are
    unfrozen and its groups are in the optimizer."""


@hookspec
def ftkit_epoch_end(run: Run, record: EpochRecord) -> None:
    """Called after each epoch's validation with the epoch's record.

    ``record`` is an ``ftkit.EpochRecord``: stage, epoch, train loss, the
    validation figures (``record.val``, ``record.metrics``,
    ``record.per_class``), LR per group, gradient-norm statistics and
    seconds; ``record.to_json()`` is the line written to ``metrics.jsonl``,
    and ``record["val_miou"]`` reads that line. Epoch 0 is the baseline
    evaluation when training starts from a checkpoint (``record.trained`` is
    False). Adaptive plugins react here and may call
    ``run.request_stop(reason)`` to end training after this epoch. The order
    is fixed (``Session.end_epoch``): the epoch's row is already in
    ``metrics.jsonl``; the stoppers have decided (``run.stop_reason`` is set
    when the baseline guard or early stopping ends the run, and a plugin's
    own request does not replace it); ``best`` and ``last`` are written after
    every implementation of this hook returned.
    """


@hookspec
def ftkit_run_end(run: Run, summary: Summary) -> None:
    """Called exactly once however the run ends, with the ``ftkit.Summary``
    (``summary.to_json()`` is ``summary.json``): its
    ``stop_reason`` is ``completed``, ``early-stopping``, ``baseline-guard``,
    ``non-finite``, a plugin's own reason, ``interrupted`` (SIGINT/SIGTERM;
    the run stays resumable and no ``summary.json`` is written) or ``error``
    (an exception, raised again after the hook). Loggers close here;
    ``summary.finished`` is False for the last two."""
