"""The loader: workers change speed, never results; ``--workers auto`` is
Lightning's rule for folders and 0 for the in-memory built-in set; ``ftkit
plan`` says what it will use."""

from __future__ import annotations

import pytest

import ftkit
from ftkit.configure import make_config
from ftkit.data.shapes import write_shapes
from ftkit.resolve import loader_settings
from tests.conftest import read_jsonl

TIMES = ("seconds", "images_per_second")


def rows(run_dir) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in TIMES}
        for row in read_jsonl(run_dir / "metrics.jsonl")
    ]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for task in ("segmentation", "classification"):
        write_shapes(root / task, task=task, image_size=40, num_samples=40, seed=3)
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, extra",
    [
        ("segmentation", {"augment": "flip,rotate(10)", "crop": "24,24"}),  # random scale and crop
        ("classification", {"augment": "flip,crop(0.6)", "mixup": 0.4, "cutmix": 1.0}),
    ],
)
def test_workers_change_speed_never_results(folders, tmp_path, task, extra):
    common = dict(
        task=task, data=str(folders / task), image_size=32, batch_size=4, epochs=2, lr=1e-3,
        strategy="full", model="tv:resnet18" if task == "classification" else None, **extra,
    )  # fmt: skip
    common = {k: v for k, v in common.items() if v is not None}
    by_workers = {}
    for workers in ("0", "2", "auto"):
        out = tmp_path / f"w{workers}"
        assert ftkit.run(workers=workers, out=str(out), **common).stop_reason == "completed"
        by_workers[workers] = rows(out)
    assert len(by_workers["0"]) == 2
    assert by_workers["2"] == by_workers["0"]
    assert by_workers["auto"] == by_workers["0"]


def test_auto_is_lightnings_rule_for_folders(tmp_path, monkeypatch, folders):
    folder = make_config(None, (), (), {"data": str(folders / "segmentation")})
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_settings(folder, "cpu").workers == 8  # 16 - 1, at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_settings(folder, "cuda").workers == 3  # 16 // 4 - 1
    assert loader_settings(folder, "cuda").pin_memory
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert loader_settings(folder, "cpu").workers == 0  # never below 0
    builtin = make_config(None, (), (), {"data": "builtin:shapes"})
    assert loader_settings(builtin, "cpu").workers == 0
    given = make_config(None, (), (), {"data": "builtin:shapes", "workers": "3"})
    assert loader_settings(given, "cpu").workers == 3


def test_plan_prints_the_loader(folders):
    from ftkit import testing

    result = testing.cli("plan", "--data", str(folders / "segmentation"), "--workers", "2")
    assert result.exit_code == 0, result.stderr
    assert (
        "loader: 2 worker process(es) (--workers), 2 batches ahead each, pin_memory off"
        in result.stdout
    )
    bad = testing.cli("plan", "--workers", "many")
    assert testing.one_line_error(bad) == (
        "ftkit: error: --workers: must be auto or a number of worker processes "
        "(0 or more), got 'many'"
    )
