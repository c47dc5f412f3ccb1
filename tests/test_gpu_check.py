"""``tools/gpu_check.py --device cpu --quick``: the GPU check's code runs end to
end here, so that a lent GPU only has to run it."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(TOOL), "--device", "cpu", "--quick"])
    with pytest.raises(SystemExit) as end:
        runpy.run_path(str(TOOL), run_name="__main__")
    assert end.value.code == 0
    result = json.loads(capsys.readouterr().out)  # stdout is one JSON object
    runs = {k: v for k, v in result.items() if isinstance(v, dict)}
    assert len(runs) == 4  # two models, with and without bf16 + channels-last
    for entry in runs.values():
        assert entry["images_per_s"] > 0 and entry["plain_images_per_s"] > 0
        assert entry["checkpoint_blocking_s_per_epoch"] > 0
        # fewer host reads than steps: the tally is read at each epoch end only (2 steps each)
        assert entry["host_syncs_per_step"] < 1
