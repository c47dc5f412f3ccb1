import json
import os
import subprocess
import sys

import ftkit_bitfit
import pytest
import torchvision

from ftkit import testing


@pytest.fixture(scope="module")
def plugins():
    return testing.plugins(ftkit_bitfit.__name__)


@pytest.fixture(scope="module")
def resnet_anatomy(plugins):
    return testing.anatomy_of(torchvision.models.resnet18(num_classes=10), plugins)


def test_trains_only_biases_and_head(plugins, resnet_anatomy):
    options = {"bias_lr_mult": 2}
    plan = testing.plan(
        "bitfit", resnet_anatomy, plugins=plugins, lr=1e-4, epochs=3, options=options
    )
    (stage,) = plan.stages
    lrs = {p: g.lr for g in stage.groups for p in g.params}
    # A ResNet-18's convolutions have no bias: its backbone biases are those
    # of its 20 BatchNorm layers.
    biases = [p for p in lrs if p.endswith(".bias") and not p.startswith("fc.")]
    assert len(biases) == 20
    assert all(lrs[p] == pytest.approx(2e-4) for p in biases)
    assert lrs["fc.weight"] == lrs["fc.bias"] == pytest.approx(1e-4)
    assert "layer4.1.conv2.weight" in stage.frozen
    # BN biases: 64 + 4*64 + (4*128+128) + (4*256+256) + (4*512+512) = 4,800; head 5,130
    assert sum(g.num_params for g in stage.groups) == 4800 + 5130


def test_listed_by_its_distribution():
    """Installed with pip, ftkit finds it through the entry point."""
    env = {k: v for k, v in os.environ.items() if k != "FTKIT_DISABLE_PLUGIN_AUTOLOAD"}
    out = subprocess.run(
        [sys.executable, "-m", "ftkit", "strategies", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    row = next(r for r in json.loads(out.stdout) if r["name"] == "bitfit")
    assert (row["plugin"], row["distribution"], row["version"]) == (
        "bitfit",
        "ftkit-bitfit",
        "0.1.0",
    )
