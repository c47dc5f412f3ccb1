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


def _batches(config):
    """ftkit's training and validation batches as the loop sees them, what
    crossed to the device, and the same samples normalised on the CPU."""
    import torch
    from torch.utils.data import DataLoader

    from ftkit.engine.train.distributed import World
    from ftkit.engine.train.loaders import loaders
    from ftkit.plugins.manager import Plugins
    from ftkit.prepare import model_data, prepare

    data = model_data(prepare(config, Plugins()))
    sampler, train, val = loaders(config, data, World(), torch.device("cpu"))
    crossed = next(iter(train.loader))[0]
    on_cpu = DataLoader(data.train, batch_size=config.batch_size, sampler=sampler, drop_last=True)
    pairs = [(next(iter(train)), next(iter(on_cpu)))]
    pairs += list(zip(val, DataLoader(data.val, batch_size=config.batch_size), strict=True))
    return crossed, pairs


@pytest.mark.parametrize(
    "task, extra",
    [
        ("segmentation", {"augment": "flip,jitter"}),
        ("segmentation", {"crop": "24,24"}),  # padded with the mean: float before it crosses
        ("classification", {"augment": "flip,crop(0.6)"}),
    ],
)
def test_images_cross_as_decoded_and_are_normalised_on_the_device(folders, task, extra):
    import torch

    model = {"model": "tv:resnet18"} if task == "classification" else {}
    config = make_config(
        None, (), (),
        {"task": task, "data": str(folders / task), "image_size": 32, "batch_size": 4,
         "resize": "keep", **model, **extra},
    )  # fmt: skip
    crossed, pairs = _batches(config)
    assert crossed.dtype == (torch.float32 if "crop" in extra else torch.uint8)
    for (x, y), (x_cpu, y_cpu) in pairs:
        assert x.dtype == torch.float32
        assert torch.equal(x, x_cpu) and torch.equal(y, y_cpu)  # bit for bit


def test_sixteen_bit_images_cross_as_float32(tmp_path):
    import torch

    from tests.test_resolution import grey_folder

    root = grey_folder(tmp_path, {"train": [0, 1, 65535, 30000], "val": [7, 65534]})
    config = make_config(
        None, (), (),
        {"task": "classification", "data": str(root), "image_size": 8, "batch_size": 2,
         "model": "tv:resnet18"},
    )  # fmt: skip
    crossed, pairs = _batches(config)
    assert crossed.dtype == torch.float32  # every one of the 65,536 levels kept
    for (x, _), (x_cpu, _) in pairs:
        assert torch.equal(x, x_cpu)
