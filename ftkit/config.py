"""The run configuration: one dataclass that is also the CLI's option list.

Each field is a command-line option (``--batch-size``), an environment
variable (``FTKIT_BATCH_SIZE``) and a key of the TOML config file. Precedence:
command line, then environment, then ``--config FILE``, then the defaults.
Strategy options live in ``[strategy]`` in the file and ``-o KEY=VALUE``.
Plugins' options (``ftkit_add_options``) are the same, kept by name in
``plugin_options``: top-level keys of the file and of the run's ``config.toml``.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import tempfile
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import ftkit.data.augment as augment_spec
from ftkit.data.load import is_folder
from ftkit.errors import UsageError
from ftkit.plan.options import Option, non_negative, positive

# By a task's targets: a plugin's task gets the default of the labels it uses.
DEFAULT_MODELS = {"segmentation": "smp:unet:resnet18", "classification": "tv:resnet18"}
DEFAULT_IMAGE_SIZE = 64
DATA_FINGERPRINT = "data_fingerprint"  # a config.toml key, written by to_toml
# What `run --from RUN` takes from RUN's config.toml unless told: the same model on
# the same data, split and scored the same way.
FOLLOWED = (
    "task", "model", "data", "num_classes", "image_size", "resize", "crop", "cat_max_ratio",
    "crop_pct", "eval_mode",
    "val_fraction", "normalize", "mean", "std",
)  # fmt: skip


def _at_least_one(v: Any) -> str | None:
    return None if v >= 1 else "must be at least 1"


def _fraction(v: float) -> str | None:
    # a share of a probability or of a metric in [0, 1]: 1 or more would erase the signal
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _open_fraction(v: float) -> str | None:
    return None if 0 < v < 1 else "must be between 0 and 1"


def _seed(v: int) -> str | None:
    # numpy takes seeds below 2**32, and epoch seeds derived from it must fit in 64 bits
    return None if 0 <= v < 2**32 else "must be in [0, 2**32)"


def _classes(v: int) -> str | None:
    return None if v >= 2 else "must be at least 2 (for segmentation the background counts)"


def _lr(v: float) -> str | None:
    if not 0 < v <= 10:
        return "must be a learning rate in (0, 10]"
    return None


def _channels(text: str) -> str:
    """``--mean``/``--std``: per-channel values, kept as ``a,b,c``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got '{text}'") from None
    if len(values) not in (1, 3) or not all(v == v and abs(v) < 1e6 for v in values):
        raise ValueError(f"expected 1 or 3 finite numbers (one per channel), got '{text}'")
    return ",".join(f"{v:.6g}" for v in (values * 3 if len(values) == 1 else values))


def _crop(text: str) -> str:
    """``--crop``: ``H,W`` or one side ``N``, kept as ``H,W``."""
    try:
        sides = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected H,W or one side N in pixels, got '{text}'") from None
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise ValueError(f"expected H,W or one side N of at least 1 pixel, got '{text}'")
    return ",".join(str(v) for v in (sides * 2 if len(sides) == 1 else sides))


def _share(v: float) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _workers(raw: Any) -> str:
    """``auto`` or a count of worker processes, kept as text."""
    text = str(raw).strip().lower()
    if text == "auto" or (text.isdigit() and not isinstance(raw, bool)):
        return text if text == "auto" else str(int(text))
    raise ValueError(f"must be auto or a number of worker processes (0 or more), got {raw!r}")


def crop_size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.split(","))
    return height, width


def opt(
    default: Any,
    help: str,
    *,
    check: Any = None,
    choices: tuple[str, ...] | None = None,
    trains: bool = True,
    flag: str | None = None,
    parse: Any = None,
    off: str | None = None,
) -> Any:
    """A field that is also a CLI option. ``trains=False`` marks options that
    do not change the training (a resume may change those). ``parse`` turns a
    raw value into the field's own (ValueError for bad input); ``off`` is the
    value ``--no-NAME`` stands for."""
    return field(
        default=default,
        metadata={
            "help": help,
            "check": check,
            "choices": choices,
            "trains": trains,
            "flag": flag,
            "parse": parse,
            "off": off,
        },
    )


@dataclass(frozen=True)
class Config:
    # Checked against the task registry once plugins are loaded (a plugin may add tasks).
    task: str = opt(
        "segmentation", "what the model predicts: segmentation, classification or a plugin's task"
    )
    model: str | None = opt(
        None,
        "model spec: smp:ARCH:ENCODER, tv:NAME or timm:NAME "
        "[default: smp:unet:resnet18 | tv:resnet18]",
    )
    num_classes: int | None = opt(
        None, "number of classes [default: from the data]", check=_classes
    )
    weights: str | None = opt(
        None,
        "pretrained weights: 'imagenet' (the model library's own, from its cache), another "
        "name it knows (IMAGENET1K_V2, a timm tag), or a FILE (state dict, safetensors, "
        "Lightning or wrapped checkpoint, ftkit run, backbone-only)",
    )
    data: str = opt("builtin:shapes", "builtin:NAME or a dataset folder")
    val_fraction: float = opt(
        0.2,
        "share of a folder without train/ and val/ held out for validation, chosen by a "
        "hash of each file's path: adding files moves none of the others",
        check=_open_fraction,
    )
    image_size: int | None = opt(
        None,
        "image side in pixels [default: a classifier's pretrained input size, else 64]",
        check=_at_least_one,
    )
    resize: str = opt(
        "keep",
        "image geometry of a data folder: keep (the aspect ratio: the shorter side to "
        "--image-size, training on a square crop of it, segmentation scored at each mask's "
        "own size) or squash (every image and mask resized to an --image-size square, "
        "and scored there)",
        choices=("keep", "squash"),
    )
    crop: str | None = opt(
        None,
        "segmentation training crop H,W (or one side N), as MMSegmentation trains: each "
        "image rescaled with its ratio kept to a shorter side of 0.5-2x --image-size, "
        "then a random crop, padded (image with the mean, mask with 255) where smaller "
        "[default: an --image-size square of the image at --image-size]",
        parse=_crop,
    )
    cat_max_ratio: float | None = opt(
        None,
        "with --crop, MMSegmentation's cat_max_ratio, e.g. 0.75: of up to 10 random crops, "
        "the first where no class covers this share of the labelled pixels",
        check=_share,
    )
    crop_pct: float | None = opt(
        None,
        "classification: the share of the image (resized to --image-size / crop_pct on "
        "its shorter side) kept by the centre crop [default: the pretrained weights' "
        "(timm's crop_pct, torchvision's crop/resize), else 1; recorded]",
        check=_share,
    )
    eval_mode: str = opt(
        "whole",
        "segmentation scoring: whole (the image at --image-size at once) or slide "
        "(windows of the --crop size at a stride of 2/3 of it, overlaps averaged)",
        choices=("whole", "slide"),
    )
    normalize: str = opt(
        "auto",
        "image statistics: weights (those the pretrained weights were trained with), "
        "dataset (the training split's own, measured once and recorded), none, or auto "
        "(weights when starting from pretrained weights, else dataset)",
        choices=("auto", "weights", "dataset", "none"),
    )
    mean: str | None = opt(
        None,
        "per-channel mean the images are normalised with, in [0, 1] pixel units, e.g. "
        "0.12,0.12,0.12 [default: by --normalize; dataset records its figures here]",
        parse=_channels,
    )
    std: str | None = opt(
        None, "per-channel std to go with --mean, e.g. 0.05,0.05,0.05", parse=_channels
    )
    num_samples: int = opt(384, "samples of a built-in dataset (train + val)", check=_at_least_one)
    # Kept in canonical form (presets expanded): config.toml records the exact pipeline.
    augment: str = opt("flip", augment_spec.HELP, parse=augment_spec.canonical, off="none")
    mixup: float | None = opt(
        None,
        "MixUp alpha, e.g. 0.2: blends pairs of training images and their labels "
        "(classification; needs a loss that takes soft targets, ce)",
        check=positive,
    )
    cutmix: float | None = opt(
        None,
        "CutMix alpha, e.g. 1.0: pastes a box of one training image into another, labels "
        "by area; with --mixup, each batch gets one of the two at random",
        check=positive,
    )
    strategy: str = opt("two-stage", "fine-tuning strategy (see 'ftkit strategies')")
    lr: float = opt(
        1e-3, "base learning rate; strategies derive every group's LR from it", check=_lr
    )
    epochs: int = opt(8, "epochs in total, over all stages", check=_at_least_one)
    batch_size: int = opt(8, "images per step", check=_at_least_one)
    optimizer: str = opt(
        "adamw", "optimizer: adamw, sgd, a plugin's, or any of timm's (lamb, adabelief, ...)"
    )
    loss: str | None = opt(
        None,
        "loss, e.g. ce, ce+dice, 0.7*ce+0.3*dice, tversky(alpha=0.3,beta=0.7) "
        "[default: the strategy's, else ce]",
    )
    class_weights: str | None = opt(
        None,
        "auto | inverse | median | FILE | comma list; for losses that take them (all "
        "built-ins but lovasz; in a sum, the terms that take them)",
    )
    label_smoothing: float = opt(
        0.0,
        "label smoothing in [0, 1), for losses that take it (ce; in a sum, its ce term)",
        check=_fraction,
    )
    accumulate: int = opt(1, "gradient accumulation steps", check=_at_least_one)
    amp: str = opt("off", "mixed precision", choices=("off", "bf16", "fp16"))
    clip_grad_norm: float | None = opt(None, "clip the total gradient norm to this", check=positive)
    grad_norm_alert: float = opt(
        10.0, "warn when the gradient norm stays above this", check=positive
    )
    max_nonfinite_steps: int = opt(
        5, "stop after this many non-finite steps in a row", check=_at_least_one
    )
    log_every: int = opt(
        20,
        "optimizer steps between reads of the loss and gradient figures (each read waits "
        "for the GPU; the progress bar and the guards update then)",
        check=_at_least_one,
        trains=False,
    )
    monitor: str | None = opt(
        None, "metric for early stopping and best weights [default: val_miou | val_accuracy]"
    )
    patience: int | None = opt(
        None,
        "epochs without improvement before stopping; the count restarts when a stage "
        "starts, measured from the stage's first epoch [default: off]",
        check=_at_least_one,
    )
    min_delta: float = opt(0.0, "smallest change that counts as improvement", check=non_negative)
    start_from: str | None = opt(
        None, "start from a converged checkpoint (weights only)", flag="--from"
    )
    guard: bool = opt(True, "baseline guard when starting --from a checkpoint")
    guard_epochs: int = opt(5, "epochs the baseline guard watches", check=_at_least_one)
    guard_tolerance: float = opt(
        0.01, "mIoU/accuracy drop below the baseline that counts, in [0, 1)", check=_fraction
    )
    seed: int = opt(0, "random seed", check=_seed)
    device: str = opt("auto", "cpu, cuda, cuda:N, mps or auto", trains=False)
    save_every: int = opt(
        1,
        "write the resumable checkpoint 'last' every N epochs (and when the run stops); "
        "a resume replays the epochs since",
        check=_at_least_one,
        trains=False,
    )
    checkpoint_writer: str = opt(
        "auto",
        "write checkpoints on a background thread, overlapping the next epoch (async), "
        "or in the training thread (sync); auto: async on CUDA, sync elsewhere",
        choices=("auto", "sync", "async"),
        trains=False,
    )
    workers: str = opt(
        "auto",
        "data-loader worker processes: N, or auto (a folder's: the cores this process "
        "may use, per rank, minus one, at most 8; the in-memory built-in set: 0)",
        parse=_workers,
        trains=False,
    )
    channels_last: bool = opt(
        False,
        "channels-last memory format (faster convolutions on recent GPUs with AMP)",
        trains=False,
    )
    ema: float | None = opt(
        None,
        "keep an exponential moving average of the weights with this decay, e.g. 0.999: "
        "validation scores it and best holds it (the raw model's metrics are kept too)",
        check=_fraction,
    )
    cache_features: str = opt(
        "auto",
        "train heads behind a frozen backbone on cached "
        "features: auto (when exact), on (or refuse), off",
        choices=("auto", "on", "off"),
        trains=False,
    )
    compile: bool = opt(
        False, "torch.compile the model (slow start, faster steps on GPU)", trains=False
    )
    out: str | None = opt(None, "run directory [default: runs/<time>-<strategy>]", trains=False)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    # The plugins' own options (ftkit_add_options) by name, defaults filled in.
    plugin_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A dataset folder by its absolute path, so a run directory names the same
        # data from any working directory (eval, --resume). Missing folders keep
        # the user's spelling for the error that follows.
        if isinstance(self.data, str) and is_folder(self.data):
            object.__setattr__(self, "data", os.path.abspath(self.data))
        # The same for the files a run starts from: config.toml names them from anywhere.
        for name in ("weights", "start_from"):
            value = getattr(self, name)
            if isinstance(value, str) and os.path.exists(value):
                object.__setattr__(self, name, os.path.abspath(value))
        try:  # also for Config(...) and replace(): the old booleans included
            object.__setattr__(self, "augment", augment_spec.canonical(self.augment))
        except ValueError as exc:
            raise UsageError(f"--augment: {exc}") from None

    @property
    def model_spec(self) -> str:
        return self.model or DEFAULT_MODELS[self.task]

    @property
    def slide_window(self) -> tuple[int, int] | None:
        """The window ``--eval-mode slide`` scores at a time: the training crop."""
        return crop_size(self.crop) if self.eval_mode == "slide" and self.crop else None

    def to_toml(self, data_fingerprint: str | None = None) -> str:
        lines = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("strategy_options", "strategy", "plugin_options") or value is None:
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
        # top-level keys, as a --config file gives them
        lines += [
            f"{k} = {_toml_value(v)}" for k, v in self.plugin_options.items() if v is not None
        ]
        if data_fingerprint:
            # Read back by eval and --resume (ignored as an option): they refuse
            # data that changed since the run.
            lines.append(f"{DATA_FINGERPRINT} = {_toml_value(data_fingerprint)}")
        lines.append("\n[strategy]")
        lines.append(f"name = {_toml_value(self.strategy)}")
        lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(self.strategy_options.items())]
        return "\n".join(lines) + "\n"


def option_fields() -> list[Any]:
    return [f for f in fields(Config) if "help" in f.metadata]


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def field_type(f: Any) -> type:
    hint = _hints()[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def flag_of(f: Any) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def option_of(f: Any) -> Option:
    """A ``Config`` field as the ``Option`` that parses and checks its values."""
    meta = f.metadata
    return Option(
        f.name,
        field_type(f),
        f.default,
        meta["help"],
        meta["check"],
        meta["choices"],
        flag=flag_of(f),
        convert=meta["parse"],
    )


def load_file(path: str, plugin_options: Iterable[str] = ()) -> dict[str, Any]:
    """A config file's values, every key checked: ``Config``'s options and the
    names in ``plugin_options`` (the loaded plugins' options)."""
    data = read_file(path)
    check_keys(data, path, plugin_options)
    return data


def read_file(path: str) -> dict[str, Any]:
    """A config file's values, unchecked: its keys can be told from typos only once
    the plugins it names (``plugins = [...]``) say which options they add."""
    try:
        with open(path, "rb") as fh:
            data = _strategy_beside_its_table(fh.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file '{path}' is not UTF-8 text: {exc.reason}") from None
    except FileNotFoundError:
        raise UsageError(f"config file '{path}' not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file '{path}' is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"config file '{path}' cannot be read: {exc.strerror}") from None
    if (Path(path).parent / "plan.json").is_file():  # a run's own record
        # Runs recorded before these options existed squashed their images and used
        # their weights' (ImageNet) statistics: read back, they keep doing so.
        data = {**RECORDED_BEFORE, **data}
    return data


def check_keys(data: dict[str, Any], path: str, plugin_options: Iterable[str] = ()) -> None:
    """Refuse a key that is no option: a close match is a typo's suggestion."""
    known = {f.name for f in option_fields()} | {"strategy", "plugins", DATA_FINGERPRINT}
    known |= set(plugin_options)
    for key in data:
        name = key.replace("-", "_")
        if name == "from":
            name = "start_from"
        if name not in known:
            # A close match is a typo; anything else is most often a strategy option
            # (lr_scale) put at the top level instead of under [strategy].
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else "; a strategy's options (see 'ftkit strategies') go in its [strategy] table"
            )
            raise UsageError(f"config file '{path}': unknown key '{key}'{hint}")


def plugins_of(file_values: dict[str, Any], where: str) -> tuple[str, ...]:
    """A config file's ``plugins = ["module", ...]``."""
    modules = file_values.get("plugins", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise UsageError(f"{where}: plugins must be a list of module names, got {modules!r}")
    return tuple(modules)


# The options every run command takes beside Config's (ftkit/cli/options.py).
SHARED_FLAGS = {"config": "--config", "plugin": "--plugin", "set": "-o/--set"}


def own_names() -> dict[str, str]:
    """What a plugin's option may not be called: every name, flag and config-file
    key of ftkit's own options, each to the option it is (for the error)."""
    own: dict[str, str] = {}
    for f in fields(Config):
        if "help" not in f.metadata:  # strategy_options, plugins, plugin_options
            own[f.name] = f"'{f.name}'"
            continue
        flag = flag_of(f)
        own[f.name] = own[flag] = flag
        if field_type(f) is bool or f.metadata.get("off") is not None:
            own[f"--no-{flag[2:]}"] = flag
    own[DATA_FINGERPRINT] = f"'{DATA_FINGERPRINT}' (a run's config.toml)"
    own["from"] = "--from"
    for name, flag in SHARED_FLAGS.items():
        own[name] = own[f"--{name}"] = flag
    return own


RECORDED_BEFORE = {"resize": "squash", "normalize": "weights"}


_TOP_STRATEGY = re.compile(r"^\s*strategy\s*=")
_STRATEGY_TABLE = re.compile(r"^\s*\[\s*strategy\s*\]")


def _strategy_beside_its_table(text: str) -> dict[str, Any]:
    """TOML, where ``strategy = "NAME"`` may stand at the top beside a ``[strategy]``
    table of its options: what people write, though TOML defines the key twice.
    The name then becomes the table's ``name``."""
    lines = text.splitlines()
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), None)
    top = next((i for i, line in enumerate(lines[:first_table]) if _TOP_STRATEGY.match(line)), None)
    if top is None or not any(_STRATEGY_TABLE.match(line) for line in lines):
        return tomllib.loads(text)
    name = tomllib.loads(lines[top])["strategy"]
    data = tomllib.loads("\n".join(lines[:top] + [""] + lines[top + 1 :]))
    table = data["strategy"]
    if "name" in table and table["name"] != name:
        raise tomllib.TOMLDecodeError(
            f"strategy = {name!r} at the top and name = {table['name']!r} in [strategy]"
        )
    table["name"] = name
    return data


def check_output_dir(path: str | Path, what: str) -> None:
    """Refuse, before any work, a folder that cannot be created or written: a regular
    file on its path, or a nearest existing folder without write permission."""
    for ancestor in (Path(path), *Path(path).parents):
        if not ancestor.exists():
            continue
        if not ancestor.is_dir():
            raise UsageError(f"{what} '{path}': '{ancestor}' is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UsageError(f"{what} '{path}': cannot write in '{ancestor}' (permission denied)")
        # Permission bits do not tell everything (root under /sys, a read-only mount):
        # a folder made and removed at once does.
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".ftkit-probe-", dir=ancestor))
        except OSError as exc:
            raise UsageError(
                f"{what} '{path}': cannot create a folder in '{ancestor}' ({exc.strerror})"
            ) from None
        return


def check_output_file(path: str, what: str, suffixes: tuple[str, ...]) -> None:
    """Refuse a file name with an unknown extension, or whose folder is missing or
    not writable, before any work is done."""
    suffix = Path(path).suffix.lower()
    if suffix not in suffixes:
        raise UsageError(
            f"{what} '{path}': unknown file type '{suffix or '(none)'}'; use {', '.join(suffixes)}"
        )
    folder = Path(path).parent
    if not folder.is_dir():
        if folder.exists():
            raise UsageError(f"{what} '{path}': '{folder}' is a file, not a folder")
        raise UsageError(f"{what} '{path}': folder '{folder}' does not exist")
    if Path(path).is_dir():
        raise UsageError(f"{what} '{path}' is a folder, expected a file name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} '{path}': cannot write in '{folder}' (permission denied)")


def build_config(
    file_values: dict[str, Any],
    cli_values: dict[str, Any],
    strategy_options: dict[str, Any],
    plugins: tuple[str, ...],
    where: str = "config",
    plugin_options: Iterable[Option] = (),
) -> Config:
    """Merge the file and the command line (already holding the environment),
    then check every value's type and range. ``plugin_options`` are the loaded
    plugins' options: given or not, each is in ``Config.plugin_options``."""
    merged: dict[str, Any] = {}
    file_strategy: dict[str, Any] = {}
    for key, value in file_values.items():
        name = "start_from" if key == "from" else key.replace("-", "_")
        if name == "strategy" and isinstance(value, dict):
            # [strategy] holds the strategy's options, and its name as `name`
            file_strategy = dict(value)
            if "name" in file_strategy:
                merged["strategy"] = file_strategy.pop("name")
        elif name == "plugins":
            plugins = plugins_of(file_values, where) + plugins
        else:
            merged[name] = value
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    values = {}
    for f in option_fields():
        if f.name in merged:
            values[f.name] = option_of(f).parse(merged[f.name], where)
    options = {k.replace("-", "_"): v for k, v in {**file_strategy, **strategy_options}.items()}
    own = {
        o.name: o.parse(merged[o.name], where) if o.name in merged else o.default
        for o in plugin_options
    }
    return replace(Config(**values), strategy_options=options, plugins=plugins, plugin_options=own)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def run_dir_of(checkpoint: str) -> Path | None:
    """The run directory of ``checkpoint``: a run itself, or a weights file in its
    ``checkpoints/``; None for a file from elsewhere."""
    for candidate in (Path(checkpoint), Path(checkpoint).parent.parent):
        if (candidate / "config.toml").is_file():
            return candidate
    return None


def read_run_config(run_dir: Path) -> dict[str, Any]:
    with open(run_dir / "config.toml", "rb") as fh:
        return tomllib.load(fh)
