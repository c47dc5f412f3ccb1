"""An epoch's end in the order docs/architecture.md writes down (Session.end_epoch):
the row in metrics.jsonl, the stoppers' verdict, ftkit_epoch_end for plugins,
then best and last; best follows the verdict of the same epoch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ftkit
from ftkit.engine.rundir.checkpoints import Checkpoints
from ftkit.engine.rundir.layout import RunDir
from ftkit.engine.stoppers import Stoppers
from tests.conftest import ROOT, read_jsonl

TINY = dict(
    data="builtin:shapes", task="classification", model="tv:resnet18", num_samples=16,
    image_size=32, batch_size=8, lr=1e-3, strategy="full",
)  # fmt: skip

# What a third-party plugin sees when it hears of an epoch.
PLUGIN = """
import ftkit, torch

SEEN = []

@ftkit.hookimpl
def ftkit_epoch_end(run, record):
    rows = [l for l in (run.dir / "metrics.jsonl").read_text().splitlines() if l]
    last = run.dir / "checkpoints" / "last.pt"
    saved = torch.load(last, weights_only=True)["run"]["epoch"] if last.exists() else None
    weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    SEEN.append((record.epoch, len(rows), run.stop_reason, saved, weights))


ENDED = []


@ftkit.hookimpl
def ftkit_run_end(run, summary):
    ENDED.append(torch.load(run.dir / "checkpoints" / "last.pt", weights_only=True)["run"]["epoch"])
"""


@pytest.fixture
def spy_plugin(tmp_path, monkeypatch):
    (tmp_path / "order_spy.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "order_spy"
    sys.modules.pop("order_spy", None)


def test_the_architecture_doc_states_the_order_this_test_checks():
    doc = (ROOT / "docs/architecture.md").read_text()
    assert (
        "1. the row in `metrics.jsonl`; 2. the stoppers' verdict; 3. `ftkit_epoch_end` for "
        "plugins; 4. `best` (when the verdict says improved) and `last`"
    ) in " ".join(doc.split())


@pytest.mark.slow
def test_epoch_end_order(tmp_path, monkeypatch, spy_plugin):
    calls: list[tuple[str, object]] = []
    verdicts: dict[int, bool] = {}

    def spy(name, method, record_of):
        def wrapped(self, *args, **kwargs):
            result = method(self, *args, **kwargs)
            calls.append((name, record_of(args, result)))
            return result

        return wrapped

    def check(args, verdict):
        verdicts[args[0].epoch] = verdict.improved
        return args[0].epoch

    monkeypatch.setattr(RunDir, "append", spy("row", RunDir.append, lambda a, r: a[0]["epoch"]))
    monkeypatch.setattr(Stoppers, "check", spy("verdict", Stoppers.check, check))
    monkeypatch.setattr(
        Checkpoints, "after_epoch", spy("checkpoint", Checkpoints.after_epoch, lambda a, r: a)
    )
    outcome = ftkit.run(epochs=3, out=str(tmp_path / "r"), plugins=[spy_plugin], **TINY)
    assert outcome.stop_reason == "completed"
    seen = sys.modules[spy_plugin].SEEN
    plugin_epochs = iter(epoch for epoch, *_ in seen)
    # the plugin's hook sits between the verdict and the checkpoint
    order = []
    for name, detail in calls:
        order.append(name)
        if name == "verdict":
            order.append("plugins")
            assert next(plugin_epochs) == detail
    assert order == ["row", "verdict", "plugins", "checkpoint"] * 3
    for (_, detail), epoch in zip(calls[2::3], (1, 2, 3), strict=True):
        record, improved = detail
        assert record.epoch == epoch and improved == verdicts[epoch]  # the same epoch's verdict
    for epoch, rows, _, saved, _ in seen:
        assert rows == epoch  # its row is written before plugins hear of it
        assert saved == (epoch - 1 if epoch > 1 else None)  # and its `last` after them


@pytest.mark.slow
def test_the_run_ends_after_the_background_writer_wrote_the_last_epoch(tmp_path, spy_plugin):
    out = str(tmp_path / "r")
    kw = dict(epochs=2, out=out, plugins=[spy_plugin], checkpoint_writer="async")
    assert ftkit.run(**kw, **TINY).stop_reason == "completed"
    assert sys.modules[spy_plugin].ENDED == [2]  # ftkit_run_end sees the last epoch's `last`


@pytest.mark.slow
def test_best_is_the_epoch_the_stoppers_chose_and_plugins_hear_their_stop(tmp_path, spy_plugin):
    # A min_delta no later epoch can beat: epoch 1 is the best, epoch 2 runs out of patience.
    out = tmp_path / "r"
    outcome = ftkit.run(
        epochs=4, patience=1, min_delta=10.0, out=str(out), plugins=[spy_plugin], **TINY
    )
    assert outcome.stop_reason == "early-stopping"
    assert outcome.summary.best["epoch"] == 1
    seen = sys.modules[spy_plugin].SEEN
    assert [(epoch, reason) for epoch, _, reason, _, _ in seen] == [
        (1, None),
        (2, "early-stopping"),  # the stoppers decided before the plugin heard of epoch 2
    ]
    best = load_file(str(out / "checkpoints" / "best.safetensors"))
    first, second = seen[0][4], seen[1][4]
    assert all(torch.equal(best[k], first[k]) for k in first)
    assert not all(torch.equal(best[k], second[k]) for k in second)
    assert [row["epoch"] for row in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    assert Path(outcome.dir) == out
