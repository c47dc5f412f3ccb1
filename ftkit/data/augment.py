"""``--augment``, ``--mixup`` and ``--cutmix`` as text: parsed and checked
without torch (the config is validated at CLI start-up).

A spec is a preset or a comma list of transforms (presets may appear in the
list), each ``NAME`` or ``NAME(ARGS)``, ARGS by position or ``KEY=VALUE``:
``crop(0.5),hflip,rotate(15),randaugment(num_ops=2,magnitude=9)``. The
canonical form spells every argument; the Config keeps it, so config.toml
records the exact pipeline a run used, whatever later versions change in
presets or defaults. ``ftkit.data.transforms`` builds it with torchvision v2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ftkit.errors import did_you_mean


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    low: float
    high: float
    integer: bool = False
    low_open: bool = False  # low itself is not allowed

    def check(self, value: float) -> str | None:
        if self.integer and not value.is_integer():
            return f"{self.name} must be a whole number"
        if value < self.low or value > self.high or (self.low_open and value == self.low):
            opening = "(" if self.low_open else "["
            return f"{self.name} must be in {opening}{self.low:g}, {self.high:g}]"
        return None


@dataclass(frozen=True)
class Kind:
    name: str
    params: tuple[Param, ...] = ()
    # False: torchvision cannot move a mask with the image (RandAugment's shears and
    # rotations refuse tv_tensors.Mask), so segmentation refuses the transform.
    joint: bool = True


_P = Param("p", 0.5, 0, 1)
KINDS = {
    k.name: k
    for k in (
        Kind("crop", (Param("scale", 0.08, 0, 1, low_open=True),)),  # RandomResizedCrop
        Kind("hflip", (_P,)),
        Kind("vflip", (_P,)),
        Kind("rotate", (Param("degrees", 15, 0, 180, low_open=True),)),
        Kind(
            "jitter",
            (
                Param("brightness", 0.4, 0, 1),
                Param("contrast", 0.4, 0, 1),
                Param("saturation", 0.4, 0, 1),
                Param("hue", 0.0, 0, 0.5),
            ),
        ),
        Kind(
            "randaugment",
            (Param("num_ops", 2, 1, 14, integer=True), Param("magnitude", 9, 0, 30, integer=True)),
            joint=False,
        ),
        Kind("trivialaugment", joint=False),
    )
}
# Usable by both tasks: heavier recipes name their transforms.
PRESETS = {
    "none": "",
    "flip": "hflip",
    "light": "crop(scale=0.5),hflip,jitter(brightness=0.2,contrast=0.2,saturation=0.2)",
    "strong": "crop(scale=0.25),hflip,rotate(15),jitter(0.4,0.4,0.4,0.05)",
}
HELP = (
    "training augmentation: none, flip, light, strong, or a comma list of crop(scale) "
    "(random resized crop), hflip(p), vflip(p), rotate(degrees), "
    "jitter(brightness,contrast,saturation,hue), randaugment(num_ops,magnitude), "
    "trivialaugment; arguments by position or name, e.g. crop(0.5),hflip,rotate(15); "
    "randaugment and trivialaugment are for classification; true/false mean flip/none"
)
_EXAMPLE = "expected e.g. crop(scale=0.5),hflip,rotate(15)"

Step = tuple[str, dict[str, float]]


def canonical(spec: object) -> str:
    """The spec with presets expanded and every argument spelled out; ``none``
    when empty. The old boolean ``--augment`` reads as flip or none. Raises
    ValueError with the one-line reason."""
    steps = parse(spec)
    return ",".join(_text(name, args) for name, args in steps) or "none"


def parse(spec: object) -> list[Step]:
    if isinstance(spec, bool):
        spec = "flip" if spec else "none"
    if not isinstance(spec, str):
        raise ValueError(f"expected a preset or a list of transforms, got {spec!r}")
    spec = {"true": "flip", "1": "flip", "false": "none", "0": "none"}.get(spec.lower(), spec)
    steps: list[Step] = []
    for item in _split(spec):
        name, args = _call(item, spec)
        if name in PRESETS:
            if args is not None:
                raise ValueError(f"'{item}': preset '{name}' takes no arguments")
            steps += parse(PRESETS[name])
        elif name in KINDS:
            steps.append((name, _arguments(KINDS[name], args, item)))
        else:
            known = [*KINDS, *PRESETS]
            raise ValueError(
                f"unknown transform '{name}'{did_you_mean(name, known)}; known: "
                f"{', '.join(KINDS)}; presets: {', '.join(PRESETS)}"
            )
    return steps


def segmentation_problem(spec: str) -> str | None:
    """The first transform segmentation cannot use, with the reason; else None."""
    for name, _ in parse(spec):
        if not KINDS[name].joint:
            return (
                f"--augment {name} is for classification only: torchvision applies it to "
                "images, not masks, so its rotations and shears would misalign the mask"
            )
    return None


def check_mixing(targets: str, mixup: float | None, cutmix: float | None) -> None:
    """MixUp and CutMix blend class labels; a mask has no soft label to blend."""
    from ftkit.errors import UsageError

    given = [flag for flag, v in (("--mixup", mixup), ("--cutmix", cutmix)) if v]
    if given and targets != "classification":
        raise UsageError(
            f"{' and '.join(given)} {'mixes' if len(given) == 1 else 'mix'} class labels: "
            f"classification only, not {targets}"
        )


def _split(spec: str) -> list[str]:
    """Top-level commas only: ``jitter(0.2,0.2),hflip`` is two items."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(spec):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise ValueError(f"unbalanced parentheses in '{spec}'; {_EXAMPLE}")
        if char == "," and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced parentheses in '{spec}'; {_EXAMPLE}")
    items.append(spec[start:])
    items = [item.strip() for item in items]
    if spec.strip() and not all(items):
        raise ValueError(f"empty transform in '{spec}'; {_EXAMPLE}")
    return [item for item in items if item]


def _call(item: str, spec: str) -> tuple[str, list[str] | None]:
    name, paren, rest = item.partition("(")
    name = name.strip().lower()
    if not paren:
        return name, None
    if not rest.endswith(")") or not name:
        raise ValueError(f"bad transform '{item}'; {_EXAMPLE}")
    inner = rest[:-1].strip()
    return name, [a.strip() for a in inner.split(",")] if inner else []


def _arguments(kind: Kind, args: list[str] | None, item: str) -> dict[str, float]:
    names = [p.name for p in kind.params]
    values: dict[str, float] = {}
    by_name = False
    for position, arg in enumerate(args or []):
        key, eq, text = (part.strip() for part in arg.partition("="))
        by_name = by_name or bool(eq)
        if not eq:
            if by_name:
                raise ValueError(f"'{item}': a value by position after one by name")
            if position >= len(names):
                takes = f"at most {len(names)} ({', '.join(names)})" if names else "none"
                raise ValueError(f"'{item}': {kind.name} takes {takes}")
            key, text = names[position], key
        elif key not in names:
            takes = ", ".join(names) or "no arguments"
            raise ValueError(
                f"'{item}': {kind.name} has no argument '{key}'"
                f"{did_you_mean(key, names)}; it takes {takes}"
            )
        if key in values:
            raise ValueError(f"'{item}': {key} given twice")
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"'{item}': {key} must be a number, got '{text}'")
        values[key] = number
    result = {}
    for param in kind.params:
        value = values.get(param.name, float(param.default))
        problem = param.check(value)
        if problem:
            raise ValueError(f"'{item}': {problem}, got {value:g}")
        result[param.name] = int(value) if param.integer else value
    return result


def _text(name: str, args: dict[str, float]) -> str:
    inner = ",".join(f"{k}={v:g}" for k, v in args.items())
    return f"{name}({inner})" if inner else name
