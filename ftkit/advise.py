"""``ftkit advise``: seed 001's strategy-selection guide, made concrete.

The guide crosses the size of the data with its similarity to the
pretraining domain::

                      small data                     large data
    similar           feature extraction (head only)  full fine-tuning, discriminative LR
    not similar       feature extraction + augment    gradual unfreezing or full fine-tuning

and its decision flow gives the sizes: under 1,000 images, start with
feature extraction; if that is not enough, unfreeze only the last stage
("layer4"); from 5,000 images on, fine-tune everything with discriminative
LRs; a very different domain calls for gradual unfreezing and strong
augmentation. Between 1,000 and 5,000 images ftkit takes the flow's second
step. The similarity is measured (``ftkit.commands.probe``): the domain counts
as near when the pretrained features remove at least half of the random
features' linear-probe error. The LRs and epochs come from the seeds' tables,
each advice naming its row. This module is the table; it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftkit.plan.units import fmt_lr

SMALL = 1000  # seed 001: "under 1,000 images and a similar domain: feature extraction"
LARGE = 5000  # seed 001: "5,000 images or more: full fine-tuning with discriminative LRs"
NEAR = 0.5  # the share of the random features' probe error the pretrained ones remove
BORDER = 0.1  # this close to NEAR, the measurement could fall either side: say both


@dataclass(frozen=True)
class Advice:
    cell: str  # the guide's cell, in words
    strategy: str
    lr: float
    epochs: int
    options: tuple[str, ...] = ()  # -o KEY=VALUE
    augment: str | None = None  # None: ftkit's default
    why: str = ""  # the guide's reasoning for the cell
    lr_row: str = ""  # which row of which LR table gives the LR and epochs


LINEAR_PROBE_ROW = "seed 003's table: linear probing 1e-3..1e-2, 10-30 epochs"
GRADUAL_ROW = (
    "the LR lint's band for transfer to another domain, 1e-5..1e-4 (seed 004's table), at its "
    "top for the head that trains throughout; one layer group unfrozen every 3 epochs (ULMFiT)"
)
GUIDE: dict[tuple[str, str], Advice] = {
    ("small", "near"): Advice(
        "small data, similar domain", "freeze", 1e-3, 20,
        why="feature extraction: only the new head trains, little risk of overfitting",
        lr_row=LINEAR_PROBE_ROW,
    ),
    ("small", "far"): Advice(
        "small data, different domain", "freeze", 1e-3, 30, augment="strong",
        why="feature extraction with data augmentation; the guide calls this cell hard: "
        "more data helps most",
        lr_row=LINEAR_PROBE_ROW + " (30: augmented images take longer to fit)",
    ),
    ("medium", "near"): Advice(
        "between small and large, similar domain", "discriminative", 1e-4, 10,
        options=("multipliers=0,0,1,10",),
        why="the flow's second step: when feature extraction is not enough, unfreeze only "
        "the last part of the backbone ('layer4'): here discriminative's last group (the "
        "backbone's last fifth of layers; 'ftkit plan' names them) at the base LR, the head "
        "at 10x, the rest frozen",
        lr_row="seed 001's 'layer4 at 1e-4, head at 1e-3'; seed 003's full fine-tuning "
        "5-20 epochs",
    ),
    ("medium", "far"): Advice(
        "between small and large, different domain", "gradual", 1e-4, 12, augment="strong",
        why="a very different domain: gradual unfreezing and strong augmentation, so the "
        "early layers train too, last",
        lr_row=GRADUAL_ROW,
    ),
    ("large", "near"): Advice(
        "large data, similar domain", "discriminative", 1e-3, 10,
        options=("schedule=warmup-cosine", "warmup_epochs=1"),
        why="full fine-tuning with discriminative LRs: the best results are possible",
        lr_row="seed 000's recipe: x0.01/x0.1/x1/x10 of 1e-3, warmup then cosine; seed "
        "003's full fine-tuning 5-20 epochs",
    ),
    ("large", "far"): Advice(
        "large data, different domain", "gradual", 1e-4, 15, augment="strong",
        why="gradual unfreezing: the early layers must train too, after the later ones",
        lr_row=GRADUAL_ROW,
    ),
}  # fmt: skip
SCRATCH = Advice(
    "no pretrained weights", "full", 1e-3, 30,
    why="nothing to transfer: the guide does not apply; every layer trains from random "
    "initialisation (start from pretrained weights if any exist: --weights)",
    lr_row="the LR lint's band for training from scratch, 1e-4..1e-3",
)  # fmt: skip


SIZE_REASONS = {
    "small": f"under {SMALL:,} training images",
    "medium": f"between {SMALL:,} and {LARGE:,} training images",
    "large": f"{LARGE:,} training images or more",
}


def size_of(train_images: int) -> str:
    if train_images < SMALL:
        return "small"
    return "large" if train_images >= LARGE else "medium"


def domain_of(error_removed: float | None) -> str:
    """``None``: no pretrained weights, nothing to compare."""
    if error_removed is None:
        return "none"
    return "near" if error_removed >= NEAR else "far"


def advise(train_images: int, error_removed: float | None) -> Advice:
    domain = domain_of(error_removed)
    return SCRATCH if domain == "none" else GUIDE[size_of(train_images), domain]


def alternative(train_images: int, error_removed: float | None) -> Advice | None:
    """The other domain's advice when the measurement is within ``BORDER`` of ``NEAR``."""
    if error_removed is None or abs(error_removed - NEAR) >= BORDER:
        return None
    other = "far" if domain_of(error_removed) == "near" else "near"
    return GUIDE[size_of(train_images), other]


def strategy_words(advice: Advice) -> list[str]:
    """The options of ``ftkit run`` / ``plan`` that carry the advice."""
    lr = fmt_lr(advice.lr)
    words = ["--strategy", advice.strategy, "--lr", lr, "--epochs", str(advice.epochs)]
    for option in advice.options:
        words += ["-o", option]
    if advice.augment:
        words += ["--augment", advice.augment]
    return words
