"""From a Config to a model, its anatomy and the plan: the one code path that
both ``ftkit plan`` and ``ftkit run`` take."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftkit.config import DEFAULT_IMAGE_SIZE, DEFAULT_MODELS, Config, crop_size
from ftkit.data.load import is_folder
from ftkit.errors import UsageError
from ftkit.models.family import Preprocessing
from ftkit.plan.anatomy import Anatomy, anatomy_of
from ftkit.plan.build import make_plan
from ftkit.plan.options import resolve_options
from ftkit.plan.stages import Plan
from ftkit.plan.strategy import PlanRequest, Strategy

if TYPE_CHECKING:
    from torch import nn

    from ftkit.data.splits import DataSplits
    from ftkit.models.weights import LoadReport
    from ftkit.plugins.manager import Plugins


@dataclass
class Prepared:
    config: Config
    strategy: Strategy
    options: dict[str, Any]
    model: nn.Module
    anatomy: Anatomy
    plan: Plan
    num_classes: int
    loss: str
    class_weights: str | None
    data: DataSplits
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: LoadReport | None = None  # what --weights or --from put into the model
    request: PlanRequest | None = None  # what the strategy was asked: the plan at another LR

    def plan_at(self, lr: float) -> Plan:
        """The same plan at base LR ``lr`` (its warnings are the LR lint's)."""
        assert self.request is not None
        request = replace(self.request, lr=lr)
        return make_plan(self.strategy, self.anatomy, request, loss=self.loss)

    def table(self) -> str:
        """What ``ftkit plan`` prints: the plan table and where the weights come from."""
        from ftkit.plan_report import plan_table

        return plan_table(self.plan, self.anatomy, self.config, self.start_lines())

    def to_json(self) -> dict[str, Any]:
        """What ``ftkit plan --json`` prints (and plan.json holds)."""
        return {**self.plan.to_json(), **self.start_json()}

    def start_lines(self) -> list[str]:
        """Where the weights come from and what images they want, for people."""
        pre = self.preprocessing
        if not pre.mean:  # not images: the family says what its input is (a tokenizer)
            weights = self.weights.line() if self.weights else "weights: random initialisation"
            return [weights, f"input: {pre.source}", self.loader_line()]
        size = f"{self.config.image_size} px" + (
            " (the weights' input size)" if pre.input_size == self.config.image_size else ""
        )
        return [
            self.weights.line() if self.weights else "weights: random initialisation",
            f"input: {size}, mean {_fmt(pre.mean)}, std {_fmt(pre.std)} ({pre.source})",
            self.geometry_line(),
            self.data_line(),
            self.loader_line(),
        ]

    def loader_line(self) -> str:
        """The loader a run will use (``--workers``), for ``ftkit plan``."""
        from ftkit.resolve import loader_settings, pick_device

        device = pick_device(self.config.device).type
        return loader_settings(self.config, device, int(os.environ.get("WORLD_SIZE", 1))).line()

    def geometry_line(self) -> str:
        """How images of the data's own sizes become the model's (``--resize``)."""
        n, task = self.config.image_size or DEFAULT_IMAGE_SIZE, self.data.task
        if not is_folder(self.config.data):
            return "geometry: the images as the data set makes them"
        if self.config.resize == "squash":
            return f"geometry: images and masks squashed to {n}x{n}, scored there (--resize squash)"
        if task == "segmentation":
            crop = self.config.crop
            trained = (
                f"rescaled to a shorter side of {n // 2}-{2 * n} px and cropped to "
                f"{crop.replace(',', 'x')} (padded with 255)"
                if crop
                else f"random {n}x{n} crops"
            )
            scored = (
                f"in {crop.replace(',', 'x')} windows sliding by 2/3 (--eval-mode slide)"
                if self.config.slide_window and crop
                else "whole"
            )
            return (
                f"geometry: shorter side to {n} px, ratio kept; trained on {trained}, "
                f"scored {scored} at each mask's own size"
            )
        pct = self.config.crop_pct or 1.0
        return (
            f"geometry: shorter side to {int(n / pct)} px, ratio kept; the centre {n}x{n} "
            f"(crop_pct {pct:.3g}), or in training --augment's crop"
        )

    def data_line(self) -> str:
        """How many samples each split holds, and how the split was made."""
        data, config = self.data, self.config
        n_train, n_val = len(data.train), len(data.val)  # type: ignore[arg-type]
        line = f"data: {n_train} train, {n_val} val samples, {data.num_classes} classes"
        labels = getattr(getattr(data.train, "source", None), "targets", None)
        if data.task == "classification" and labels is not None:
            counts = [0] * data.num_classes
            for label in labels:
                counts[int(label)] += 1
            line += (
                " (train "
                + ", ".join(f"{name} {n}" for name, n in zip(data.class_names, counts, strict=True))
                + ")"
            )
        if is_folder(config.data):
            from ftkit.data.folders import has_own_split

            line += (
                "; split by the folder's train/ and val/"
                if has_own_split(Path(config.data))
                else f"; split by path hash, val fraction {config.val_fraction:g}"
            )
        return line

    def split(self) -> dict[str, Any] | None:
        """Which files train and which are scored, for ``split.json``."""
        if not is_folder(self.config.data):
            return None
        from ftkit.data.folders import split_record

        record = split_record(self.data, Path(self.config.data))
        return {"val_fraction": self.config.val_fraction, **record} if record else None

    def start_json(self) -> dict[str, Any]:
        pre = self.preprocessing
        return {
            "weights": self.weights.line() if self.weights else None,
            # read by `ftkit interpolate`: a new head has no start worth mixing in
            "new_head": self.weights.head_is_new if self.weights else True,
            "preprocessing": {
                "mean": list(pre.mean),
                "std": list(pre.std),
                "image_size": self.config.image_size,
                "resize": self.config.resize,
                "source": pre.source,
            },
        }


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def resolve_strategy(
    config: Config, plugins: Plugins, *, check_files: bool = True
) -> tuple[Strategy, dict[str, Any]]:
    """The strategy and its options; ``check_files`` refuses a missing ``--from`` or
    ``--weights`` file (not wanted where the weights come from a run's checkpoint)."""
    strategy: Strategy = plugins.strategies.get(config.strategy)
    options = resolve_options(
        strategy.all_options(), config.strategy_options, f"strategy '{strategy.name}'"
    )
    if strategy.requires_from and not config.start_from:
        raise UsageError(
            f"strategy '{strategy.name}' needs --from CHECKPOINT "
            f"(the converged baseline to start from)"
        )
    if not check_files:
        return strategy, options
    from ftkit.models.weights import looks_like_file

    weights_file = config.weights if config.weights and looks_like_file(config.weights) else None
    for flag, path in (("--from", config.start_from), ("--weights", weights_file)):
        if path and not Path(path).exists():
            raise UsageError(f"{flag} '{path}' not found")
    return strategy, options


def prepare(config: Config, plugins: Plugins, *, load_weights: bool = True) -> Prepared:
    """``load_weights=False`` skips ``--weights``/``--from`` (a resume or an
    evaluation loads its own); the plan is the same either way."""
    from ftkit.resolve import build_model, load_start_weights, preprocessing

    config = with_plugin_options(config, plugins)
    task = plugins.tasks.get(config.task)
    if config.model is None and config.task not in DEFAULT_MODELS:
        # A plugin's task: the default model of the labels it uses.
        config = replace(config, model=DEFAULT_MODELS[task.targets])
    # A run's later commands read its checkpoints: the files it started from may be gone.
    strategy, options = resolve_strategy(config, plugins, check_files=load_weights)
    pre = preprocessing(config, plugins)
    if config.image_size is None:
        # A classifier's pretrained weights say what input size they were trained at.
        size = pre.input_size if config.weights and task.targets == "classification" else None
        config = replace(config, image_size=size or DEFAULT_IMAGE_SIZE)
    loss = config.loss or strategy.default_loss or "ce"
    class_weights = config.class_weights or strategy.default_class_weights
    class_weights, loss_notes = check_loss(config, loss, class_weights, plugins)
    if config.eval_mode == "slide" and not config.crop:
        raise UsageError("--eval-mode slide slides windows of the --crop size; give --crop")
    # Opened even when --num-classes is given: plan must refuse missing data as run does.
    data = open_data(config, plugins, config.num_classes)
    config, pre, normalize_notes = normalization(config, pre, data)
    if config.crop_pct is None and task.targets == "classification":
        # recorded, so a fine-tune --from this run and every eval crop the same
        config = replace(config, crop_pct=(pre.crop_pct if config.weights else None) or 1.0)
    held_back = hold_back_added(config, data)
    num_classes = config.num_classes or data.num_classes
    if class_weights:
        from ftkit.class_weights import parse_class_weights

        parse_class_weights(class_weights, num_classes)
    model = build_model(
        config.model_spec, num_classes=num_classes, task=task.targets, plugins=plugins
    )
    anatomy = anatomy_of(model, [entry.value for entry in plugins.anatomies])
    report = load_start_weights(config, plugins, model, anatomy) if load_weights else None
    request = PlanRequest(
        lr=config.lr,
        epochs=config.epochs,
        options=options,
        from_checkpoint=bool(config.start_from),
        new_loss=config.loss is not None,
        pretrained=bool(config.weights),
        new_head=report.head_is_new if report else not config.start_from,
        optimizer=config.optimizer,
    )
    warnings = (
        *filter(None, [input_size_problem(model, config)]),
        *baseline_differences(config),
        *held_back,
        *normalize_notes,
        *loss_notes,
    )
    plan = make_plan(strategy, anatomy, request, loss=loss, warnings=warnings)
    return Prepared(
        config,
        strategy,
        options,
        model,
        anatomy,
        plan,
        num_classes,
        loss,
        class_weights,
        data,
        pre,
        report,
        request,
    )


def hold_back_added(config: Config, data: DataSplits) -> list[str]:
    """Files added to the folder since the ``--from`` run train, unscored: the
    fine-tune is scored on exactly its baseline's validation images. A warning
    naming them, if any."""
    import json

    from ftkit.config import run_dir_of
    from ftkit.data.folders import SPLIT_FILE
    from ftkit.data.folders import hold_back_added as move

    run_dir = run_dir_of(config.start_from) if config.start_from else None
    if run_dir is None or not (run_dir / SPLIT_FILE).is_file() or not is_folder(config.data):
        return []
    from ftkit.config import read_run_config

    if read_run_config(run_dir).get("data") != config.data:
        return []
    moved = move(data, Path(config.data), json.loads((run_dir / SPLIT_FILE).read_text()))
    if not moved:
        return []
    shown = ", ".join(moved[:3]) + (f" and {len(moved) - 3} more" if len(moved) > 3 else "")
    return [
        f"{len(moved)} file(s) added since the --from run would have been validation "
        f"images: {shown}; they train, and validation stays the baseline's"
    ]


def baseline_differences(config: Config) -> list[str]:
    """What this run does not take from its ``--from`` run (``run --from`` follows
    the run's model and data unless told), and a baseline split by an older rule."""
    from ftkit.config import FOLLOWED, read_run_config, run_dir_of

    run_dir = run_dir_of(config.start_from) if config.start_from else None
    if run_dir is None:
        return []
    saved = read_run_config(run_dir)
    found = [
        f"--{key.replace('_', '-')} {getattr(config, key)} differs from the --from run's "
        f"{saved[key]}"
        for key in FOLLOWED
        if key in saved and getattr(config, key) != saved[key]
    ]
    if saved.get("data") == config.data and is_folder(config.data) and "val_fraction" not in saved:
        found.append(
            f"'{run_dir}' was split by an older ftkit (a seeded shuffle): some of its "
            "training images may be validation images here"
        )
    return found


def check_loss(
    config: Config, spec: str, class_weights: str | None, plugins: Plugins
) -> tuple[str | None, list[str]]:
    """The class weights to use, and notes on options some terms ignore; refuses a spec
    or an option the loss cannot honour (see ``ftkit.losses.check_loss_spec``)."""
    from ftkit.losses import check_loss_spec, parse_loss_terms, takes

    targets = plugins.tasks.get(config.task).targets
    terms = parse_loss_terms(spec, plugins.losses.names())
    if config.mixup or config.cutmix:
        from ftkit.data.augment import check_mixing
        from ftkit.losses import takes_soft_targets

        check_mixing(targets, config.mixup, config.cutmix)
        hard = [t.name for t in terms if not takes_soft_targets(plugins.losses.get(t.name))]
        if hard:
            given = "--mixup" if config.mixup else "--cutmix"
            raise UsageError(
                f"{given} makes class probabilities the targets; loss '{hard[0]}' "
                "takes class indices only (use ce)"
            )
    # The strategy's default weights are dropped, not refused, for a loss taking none.
    if (
        class_weights
        and not config.class_weights
        and not any(takes(plugins.losses.get(t.name), "class_weights") for t in terms)
    ):
        class_weights = None
    notes = check_loss_spec(
        spec,
        plugins.losses,
        task=targets,
        class_weights=bool(class_weights),
        label_smoothing=config.label_smoothing,
    )
    return class_weights, notes


def prepare_run(config: Config, plugins: Plugins, *, load_weights: bool = True) -> Prepared:
    """``prepare`` and every check ``ftkit run`` makes before training: ``ftkit plan``
    takes this path too, so it refuses whatever ``run`` would refuse."""
    from ftkit.config import check_output_dir
    from ftkit.errors import unknown
    from ftkit.resolve import pick_device

    if config.out:
        check_output_dir(config.out, "--out")
    pick_device(config.device)
    task = plugins.tasks.get(config.task)
    plugins.optimizers.get(config.optimizer)  # an unknown name fails here, before any work
    monitor = config.monitor or task.monitor
    if monitor not in task.monitors:
        raise unknown("--monitor metric", monitor, task.monitors)
    prepared = prepare(config, plugins, load_weights=load_weights)
    n_train, n_val = len(prepared.data.train), len(prepared.data.val)  # type: ignore[arg-type]
    if n_train < config.batch_size * config.accumulate:
        raise UsageError(
            f"the training split has {n_train} samples, fewer than one "
            f"step (--batch-size {config.batch_size} x --accumulate "
            f"{config.accumulate})"
        )
    if n_val == 0:
        raise UsageError(f"the validation split of '{config.data}' is empty")
    return prepared


# Under a 16-bit level's hundredth: a constant channel (a red-only image's blue),
# which gets std 1 rather than a division by zero (it is its mean, so 0, anyway).
CONSTANT_STD = 1e-7
CHECKED_IMAGES = 64  # how many training images the plan measures against the weights'


def normalization(
    config: Config, pre: Preprocessing, data: DataSplits
) -> tuple[Config, Preprocessing, list[str]]:
    """``--normalize`` (and ``--mean``/``--std``) decided: the config with what
    ``auto`` chose and what ``dataset`` measured (so config.toml records them and
    every later command reuses them), the statistics, and the plan's warnings."""
    from ftkit.data.statistics import channel_statistics, far_from

    if not pre.mean:  # not images: nothing to normalise
        return config, pre, []
    if (config.mean is None) != (config.std is None):
        raise UsageError("--mean and --std go together; give both, or neither")
    mode = config.normalize
    why = ""
    if mode == "auto":
        mode = "weights" if config.weights or config.start_from else "dataset"
        start = "pretrained weights" if mode == "weights" else "no pretrained weights"
        why = f" (--normalize auto: {start})"
    if config.mean is not None and config.std is not None:
        mean, std = _floats(config.mean), _floats(config.std)
        if any(v <= 0 for v in std):
            raise UsageError(f"--std {config.std}: every channel's std must be above 0")
        told = "the training split's, as recorded" if mode == "dataset" else "--mean and --std"
        return replace(config, normalize=mode), replace(pre, mean=mean, std=std, source=told), []
    if mode == "none":
        plain = replace(pre, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), source="none (--normalize)")
        return replace(config, normalize=mode), plain, []
    if mode == "weights":
        notes = []
        measured = channel_statistics(data.train, limit=CHECKED_IMAGES)
        if measured and far_from(measured, (pre.mean, pre.std)):
            notes.append(
                f"the training images' mean {_fmt(measured[0])} and std {_fmt(measured[1])} "
                f"are far from the {pre.source} ({_fmt(pre.mean)}, {_fmt(pre.std)}) the inputs "
                f"are normalised with; --normalize dataset uses the data's own"
            )
        return replace(config, normalize=mode), replace(pre, source=pre.source + why), notes
    measured = channel_statistics(data.train)
    if measured is None and config.normalize == "auto":  # a plugin's data, its own reading
        why = " (--normalize auto: no pretrained weights, and this data cannot be measured)"
        return replace(config, normalize="weights"), replace(pre, source=pre.source + why), []
    if measured is None:
        raise UsageError(
            f"--normalize dataset: ftkit cannot read the images of '{config.data}' before "
            f"their transforms; give --mean and --std, or --normalize weights"
        )
    mean, std = measured[0], tuple(v if v > CONSTANT_STD else 1.0 for v in measured[1])
    config = replace(
        config, normalize="dataset", mean=",".join(f"{v:.6g}" for v in mean),
        std=",".join(f"{v:.6g}" for v in std),
    )  # fmt: skip
    # the recorded (rounded) figures, so this run and every later command agree exactly
    mean, std = _floats(config.mean or ""), _floats(config.std or "")
    return config, replace(pre, mean=mean, std=std, source="the training split's own" + why), []


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def train_crop(config: Config) -> Any:
    """``--crop`` and ``--cat-max-ratio`` as the data's ``TrainCrop``, or None."""
    from ftkit.data.transforms import TrainCrop

    if config.cat_max_ratio is not None and not config.crop:
        raise UsageError("--cat-max-ratio picks among random crops; give --crop")
    return TrainCrop(crop_size(config.crop), config.cat_max_ratio) if config.crop else None


def with_plugin_options(config: Config, plugins: Plugins) -> Config:
    """``config`` with every loaded plugin's option (``ftkit_add_options``): those
    not given at their defaults, so that the run records them; a name no plugin
    adds is refused (``make_config`` checked the values themselves)."""
    from ftkit.errors import unknown

    declared = {option.name: option for option in plugins.option_list()}
    for name in config.plugin_options:
        if name not in declared:
            raise unknown("plugin option", name, declared)
    filled = {n: config.plugin_options.get(n, o.default) for n, o in declared.items()}
    return config if filled == config.plugin_options else replace(config, plugin_options=filled)


def takes_options(load: Any) -> bool:
    """Whether a task's ``load_data`` takes ``options=`` (older plugins' do not)."""
    import inspect

    try:
        params = inspect.signature(load).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no signature to read
        return False
    return any(p.name == "options" or p.kind is p.VAR_KEYWORD for p in params)


def open_data(config: Config, plugins: Plugins, num_classes: int | None = None) -> DataSplits:
    from ftkit.data.load import load_data

    task = plugins.tasks.get(config.task)
    if task.load_data is not None:  # a task that reads its own data (text, ...)
        extra = {"options": dict(config.plugin_options)} if takes_options(task.load_data) else {}
        return task.load_data(
            config.data, model=config.model_spec, seed=config.seed, num_classes=num_classes,
            **extra,
        )  # fmt: skip
    return load_data(
        config.data,
        plugins.tasks.get(config.task).targets,
        plugins.datasets,
        image_size=config.image_size or DEFAULT_IMAGE_SIZE,
        num_samples=config.num_samples,
        seed=config.seed,
        augment=config.augment,
        val_fraction=config.val_fraction,
        num_classes=num_classes,
        resize=config.resize,
        crop=train_crop(config),
        mixup=config.mixup,
        cutmix=config.cutmix,
    )


def model_data(prepared: Prepared) -> DataSplits:
    """The data with the weights' normalisation, opened once."""
    data = prepared.data
    pre = prepared.preprocessing
    config = prepared.config
    return data.with_transforms(
        augment=config.augment,
        mean=pre.mean,
        std=pre.std,
        mixup=config.mixup,
        cutmix=config.cutmix,
        crop_pct=config.crop_pct or 1.0,
    )


def input_size_problem(model: nn.Module, config: Config) -> str | None:
    """What is wrong when the model only takes one input size (a ViT's patch
    grid and position embeddings) and ``--image-size`` is another: it would
    fail at the first training step. ``plan`` warns, ``run`` refuses."""
    size = fixed_input_size(model)
    want = (config.image_size, config.image_size)
    if size is None or size == want:
        return None
    return (
        f"{config.model_spec} takes {size[0]}x{size[1]} images, not {want[0]}x{want[1]}; "
        f"use --image-size {size[0]}"
    )


def fixed_input_size(model: nn.Module) -> tuple[int, int] | None:
    """(height, width) the model requires, or None when it takes any size."""
    module: Any
    for module in model.modules():
        kind = type(module)
        # torchvision's ViT asserts its image_size in every forward
        if kind.__name__ == "VisionTransformer" and kind.__module__.startswith("torchvision."):
            return (module.image_size, module.image_size)
        # timm's PatchEmbed (ViT, DeiT, ... also in smp's tu- encoders) asserts a fixed
        # img_size unless the model was made with dynamic_img_size
        img_size = getattr(module, "img_size", None)
        if getattr(module, "strict_img_size", False) and img_size is not None:
            return (int(img_size[0]), int(img_size[1]))
    return None
