"""Every bad input exits 2 with one line that names the culprit; nothing on disk
changes. (Option values: test_config.py; plugins: test_plugins.py; checkpoints:
test_reliability.py and test_loss_switch.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_line_error
from PIL import Image

RUN = ["run", "--epochs", "2", "--image-size", "32", "--batch-size", "2"]


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def seg_folder(root, n=4, size=8, mask_value=1):
    for split in ("train", "val"):
        for i in range(n):
            png(root / split / "images" / f"{i}.png", np.full((size, size, 3), 90))
            mask = np.zeros((size, size))
            mask[:2, :2] = mask_value
            png(root / split / "masks" / f"{i}.png", mask)
    return root


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--model", "tv:resnet1800", "--task", "classification"],
            "unknown torchvision model 'resnet1800' (did you mean 'resnet18'?)",
        ),
        (["--model", "smp:unet:resnet1800"], "unknown smp encoder 'resnet1800' (did you mean"),
        (["--model", "resnet18"], "model spec 'resnet18' must look like PREFIX:NAME"),
        (["--loss", "dcie"], "unknown loss 'dcie' (did you mean 'dice'?)"),
        (
            ["--data", "builtin:shape"],
            "unknown dataset 'builtin:shape' (did you mean 'builtin:shapes'?)",
        ),
        (["--data", "no/such/folder"], "dataset folder 'no/such/folder' not found"),
        (["--num-samples", "12", "--batch-size", "16"], "fewer than one step"),
        (["--strategy", "freeze", "-o", "train_from=layer9"], "unknown layer group 'layer9'"),
        (["--class-weights", "1,2"], "class weights"),
        (
            ["--monitor", "val_mIoU"],
            "unknown --monitor metric 'val_mIoU' (did you mean 'val_miou'?)",
        ),
    ],
)
def test_bad_run_input(ftkit, tmp_path, args, expected):
    line = one_line_error(ftkit(*RUN, *args))
    assert expected in line
    assert not (tmp_path / "runs").exists()


def test_empty_dataset(ftkit, tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    line = one_line_error(ftkit(*RUN, "--data", "data"))
    assert "data" in line and ("empty" in line or "no " in line)


def test_mask_value_beyond_the_classes(ftkit, tmp_path):
    seg_folder(tmp_path / "data", mask_value=7)
    line = one_line_error(ftkit(*RUN, "--data", "data", "--num-classes", "3"))
    assert "7" in line and ".png" in line and "mask" in line


def test_image_and_mask_sizes_differ(ftkit, tmp_path):
    root = seg_folder(tmp_path / "data")
    png(root / "train" / "masks" / "2.png", np.zeros((6, 5)))
    line = one_line_error(ftkit(*RUN, "--data", "data"))
    assert "2.png" in line and "8x8" in line and "5x6" in line


def test_truncated_image(ftkit, tmp_path):
    root = seg_folder(tmp_path / "data")
    image = root / "val" / "images" / "1.png"
    image.write_bytes(image.read_bytes()[:30])
    line = one_line_error(ftkit(*RUN, "--data", "data"))
    assert "1.png" in line


def test_classification_folder_with_one_class(ftkit, tmp_path):
    for split in ("train", "val"):
        for i in range(4):
            png(tmp_path / "data" / split / "cat" / f"{i}.png", np.full((8, 8, 3), 50))
    line = one_line_error(
        ftkit(*RUN, "--task", "classification", "--model", "tv:resnet18", "--data", "data")
    )
    assert "one class" in line or "only" in line


def test_config_with_an_unknown_key(ftkit, tmp_path):
    (tmp_path / "c.toml").write_text("batchsize = 4\n")
    line = one_line_error(ftkit("plan", "--config", "c.toml"))
    assert "unknown key 'batchsize' (did you mean 'batch_size'?)" in line
