"""``ftkit lr-find`` (issue 14): the sweep keeps the plan's LR ratios at every
step, puts everything back, reads the curve by its stated rules, and writes
nothing but the plot it is asked for."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch
from conftest import one_line_error
from torch import nn

from ftkit.commands.lr_find import RULES, Sweep, find_lr, grid, lowest, steepest, sweep, valley
from ftkit.config import build_config
from ftkit.engine.train.loop import Loop
from ftkit.engine.train.staging import apply_stage, make_optimizer, set_train_mode
from ftkit.plan import ParamGroup, Stage
from ftkit.plan.units import fmt_lr
from ftkit.plugins.manager import Plugins

TINY = ["--task", "classification", "--image-size", "32", "--num-samples", "32",
        "--batch-size", "4", "--device", "cpu"]  # fmt: skip


def test_every_group_keeps_its_plan_ratio_at_every_step():
    config = build_config(
        {},
        {"task": "classification", "image_size": 32, "num_samples": 32, "batch_size": 4,
         "strategy": "llrd", "lr": 2e-4, "device": "cpu"},
        {"decay": "0.5"},
        (),
    )  # fmt: skip
    finding = find_lr(config, Plugins(()), steps=12, start=1e-6, end=1e-2, diverge=1e9)
    stage = finding.prepared.plan.stages[0]
    plan_lr = {g.label: g.lr for g in stage.groups}
    assert len(set(plan_lr.values())) >= 4  # llrd: a different LR per layer
    assert finding.sweep.lrs == grid(1e-6, 1e-2, 12)
    assert len(finding.sweep.group_lrs) == 12
    for base, lrs in zip(finding.sweep.lrs, finding.sweep.group_lrs, strict=True):
        assert lrs.keys() == plan_lr.keys()
        for label, lr in lrs.items():
            # the group at its plan LR scaled to this step's base: the plan's ratios
            assert lr == pytest.approx(plan_lr[label] * base / 2e-4, rel=1e-12)
            assert lr / lrs["head"] == pytest.approx(plan_lr[label] / plan_lr["head"], rel=1e-12)
    assert finding.to_json()["groups"]["head"] == pytest.approx(1.0)


class Net(nn.Module):
    """BatchNorm buffers, dropout (the RNG) and a frozen layer: all must come back."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(6, 6)
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(self.frozen(x)))


def _stage(model: nn.Module, lr: float) -> Stage:
    names = [n for n, _ in model.named_parameters() if not n.startswith("frozen.")]
    body = tuple(n for n in names if n.startswith("body."))
    head = tuple(n for n in names if n.startswith("head."))
    groups = (
        ParamGroup("body", body, lr / 10, weight_decay=0.01),
        ParamGroup("head", head, lr, weight_decay=0.01),
    )
    frozen = ("frozen.weight", "frozen.bias")
    return Stage("s", 1, groups, loss="ce", frozen=frozen, bn_mode="train")


def _batches():
    g = torch.Generator().manual_seed(1)
    while True:
        yield torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)


def test_the_sweep_leaves_weights_optimizer_flags_and_rng_as_they_were():
    torch.manual_seed(0)
    model = Net()
    loop = Loop(model, make_optimizer_for(model), torch.device("cpu"))
    stage = _stage(model, 1e-3)
    apply_stage(model, loop.optimizer, stage)
    set_train_mode(model, stage)
    loss_fn = nn.CrossEntropyLoss()
    batches = _batches()
    for _ in range(3):  # optimizer state to keep: Adam's moments and step counts
        x, y = next(batches)
        loss_fn(model(x), y).backward()
        loop.optimizer.step()
    model.eval()  # a mode to keep
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = loop.optimizer.state_dict()
    moments = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer["state"].items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()

    result = sweep(loop, batches, loss_fn, 1e-3, grid(1e-5, 10.0, 30))
    assert len(result.lrs) > 5  # it trained: the weights moved during the sweep

    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k  # weights and BatchNorm statistics
    after = loop.optimizer.state_dict()
    assert [g["lr"] for g in after["param_groups"]] == [1e-3 / 10, 1e-3]
    assert after["state"].keys() == moments.keys()
    for k, v in after["state"].items():
        for n, t in v.items():
            assert torch.equal(t, moments[k][n]), (k, n)
    for p, grad, flag in zip(model.parameters(), grads, flags, strict=True):
        assert p.requires_grad == flag
        assert (p.grad is None and grad is None) or torch.equal(p.grad, grad)
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def make_optimizer_for(model: nn.Module) -> torch.optim.Optimizer:
    from ftkit.optimizers import ftkit_register_optimizers

    found = []
    ftkit_register_optimizers(register=found.append)
    adamw = next(o for o in found if o.name == "adamw")
    return make_optimizer(adamw, model)


def _curve(smoothed: list[float], diverged: bool = False) -> Sweep:
    lrs = grid(1e-6, 1e-1, len(smoothed))  # 1 decade every 2 points when 11
    return Sweep(lrs, smoothed, smoothed, [], diverged=diverged)


def test_the_rules_read_the_curve_as_stated():
    # 20 points; the first two (a tenth) are ignored, the last one diverged.
    s = [9.0, 1.0, 5.0, 5.0, 4.9, 4.8, 4.0, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5,
         1.4, 1.3, 1.2, 1.1, 1.0, 2.0, 50.0]  # fmt: skip
    curve = _curve(s, diverged=True)
    # the minimum: index 17 (1.0; index 1's 1.0 is in the ignored tenth)
    assert lowest(curve) == 17
    assert RULES["minimum"](curve) == pytest.approx(curve.lrs[17] / 10)
    # the largest drop per decade: the central difference at 6 (4.8 -> 2.0)
    assert steepest(curve) == 6
    # the longest fall: 5.0 (index 2) down to 1.0 (index 17), halfway is index 9
    assert valley(curve) == 2 + (17 - 2) // 2
    assert RULES["valley"](curve) == curve.lrs[9] and RULES["steepest"](curve) == curve.lrs[6]
    # steepest looks at the fall only: a steeper drop after the minimum does not count
    assert steepest(_curve([3.0, 3.0, 2.0, 1.0, 0.9, 4.0, 0.95, 1.2, 5.0, 6.0, 7.0])) == 2
    # the point where the sweep diverged is never a candidate
    falling = [3.0] * 9 + [2.9, 0.1]
    assert steepest(_curve(falling)) == 10
    assert steepest(_curve(falling, diverged=True)) == 9


def test_lr_find_prints_the_run_command_and_writes_nothing_but_the_plot(ftkit, tmp_path):
    args = ["lr-find", *TINY, "--strategy", "two-stage", "--epochs", "4", "-o", "lr_scale=0.5",
            "--out", "runs/x", "--steps", "20", "--plot", "sweep.png", "--json"]  # fmt: skip
    result = ftkit(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.png"]  # no run directory
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["stage"] == {"index": 1, "name": "head"}
    assert report["groups"]["head"] == pytest.approx(0.5)  # lr_scale: the head at 0.5 x base
    assert report["rule"] == "valley"
    assert report["suggested_lr"] == report["suggestions"]["valley"]
    assert report["lrs"][0] <= report["suggested_lr"] <= report["lrs"][-1] * 1.05
    words = shlex.split(report["command"])
    assert words[:2] == ["ftkit", "run"]
    assert words[words.index("--lr") + 1] == fmt_lr(report["suggested_lr"])
    for kept in ("--strategy", "two-stage", "-o", "lr_scale=0.5", "--out", "runs/x"):
        assert kept in words
    for own in ("--steps", "--plot", "--json", "--rule"):
        assert own not in words
    # the command it prints is one ftkit accepts: the same options make a plan
    plan = ftkit("plan", *words[2:], "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["stages"][0]["groups"][0]["lr"] == pytest.approx(
        0.5 * report["suggested_lr"]
    )


def test_lr_find_text_names_the_rule_the_lint_and_the_command(ftkit):
    result = ftkit("lr-find", *TINY, "--strategy", "freeze", "--steps", "15", "--rule", "steepest")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("strategy 'freeze', stage 1 'freeze': every group at its plan ratio")
    assert lines[2].startswith("suggested base LR: ")
    assert "(steepest rule; valley " in lines[2] and ", minimum " in lines[2]
    assert lines[3].startswith("LR lint at the suggestion: ")
    assert lines[-1].startswith("  ftkit run --task classification") and "--lr " in lines[-1]


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--stage", "2"], {}, "--stage 2: the plan of 'full' has 1 stage(s)"),
        (["--start-lr", "1e-2", "--end-lr", "1e-3"], {}, "--start-lr 0.01 must be below --end-lr"),
        (["--plot", "sweep.txt"], {}, "--plot"),
        (["--rule", "fastest"], {}, "'fastest' is not one of 'valley', 'minimum', 'steepest'"),
        ([], {"WORLD_SIZE": "2"}, "lr-find runs in one process; run it without torchrun"),
        (["--lr", "1e-3", "--start-lr", "1e3", "--end-lr", "1e9"], {},
         "nothing to read; lower --start-lr or raise --steps"),
    ],
)  # fmt: skip
def test_bad_lr_find_input_is_one_line(ftkit, tmp_path, args, env, fragment):
    result = ftkit("lr-find", *TINY, "--strategy", "full", "--steps", "10", *args, env=env)
    assert fragment in one_line_error(result)
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_stops_when_the_loss_diverges():
    torch.manual_seed(0)
    model = Net()
    loop = Loop(model, make_optimizer_for(model), torch.device("cpu"))
    apply_stage(model, loop.optimizer, _stage(model, 1e-3))
    result = sweep(loop, _batches(), nn.CrossEntropyLoss(), 1e-3, grid(1e-4, 1e6, 60))
    assert result.diverged and len(result.lrs) < 60
    if "non-finite" not in result.stop:  # the last point is the one that passed 4x
        assert result.smoothed[-1] > 4 * min(result.smoothed)
        assert all(
            s <= 4 * min(result.smoothed[: i + 1]) for i, s in enumerate(result.smoothed[:-1])
        )
    assert all(math.isfinite(v) for v in result.losses)


def test_the_sweep_plot_keeps_the_loss_axis_above_zero_and_tells_the_rules_apart(
    tmp_path, monkeypatch
):
    from types import SimpleNamespace

    import matplotlib.figure

    from ftkit.commands.lr_find import Finding, Sweep, plot_sweep

    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    losses = [1.10, 1.05, 0.60, 0.20, 0.05, 3.0]  # cross-entropy: never below 0
    sweep = Sweep(lrs=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], losses=losses, smoothed=losses)
    plan = SimpleNamespace(strategy="full", stages=[SimpleNamespace(name="full")])
    rules = {"valley": 1e-4, "minimum": 1e-2, "steepest": 1e-3}
    plot_sweep(
        Finding(SimpleNamespace(plan=plan), 0, sweep, "valley", rules), str(tmp_path / "p.png")
    )
    ax = drawn[0].axes[0]
    low, top = ax.get_ylim()
    assert low >= 0 and low <= 0.05 and top == pytest.approx(1.65)
    lines = [line for line in ax.get_lines() if line.get_label().split(":")[0] in rules]
    styles = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(lines) == 3 and len(styles) == 3  # no two rules drawn alike
