"""Reliability and safety: exact resume after SIGKILL or SIGINT, atomic
checkpoints, and checkpoints that can never run code."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import one_line_error

import ftkit.checkpoint as ckpt

# A small U-Net keeps checkpoints light; an epoch still takes a second or two.
RUN = [
    "run",
    "--image-size",
    "32",
    "--num-samples",
    "200",
    "--batch-size",
    "8",
    "--epochs",
    "3",
    "--strategy",
    "full",
    "--lr",
    "1e-3",
    "--model",
    "smp:unet:tu-mobilenetv3_small_050",
]
TIMING = ("seconds", "images_per_second")


def weights_hash(run: Path) -> str:
    state = ckpt.load_state(run / "checkpoints" / ckpt.LAST)["model"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].numpy().tobytes())
    return digest.hexdigest()


def rows(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out.append({k: v for k, v in record.items() if k not in TIMING})
    return out


def start(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen(
        [sys.executable, "-m", "ftkit", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(run: Path, proc, timeout=300):
    """Until epoch 1's checkpoint is complete (its rename is atomic)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "checkpoints" / ckpt.LAST).exists():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not get there in time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    where = tmp_path_factory.mktemp("ref")
    proc = start([*RUN, "--out", "run"], where)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return where / "run"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_then_resumed_is_identical(reference, tmp_path, how):
    run = tmp_path / "run"
    proc = start([*RUN, "--out", "run"], tmp_path)
    wait_for_checkpoint(run, proc)
    time.sleep(0.5)  # into epoch 2, which takes a few seconds
    proc.send_signal(how)
    out, err = proc.communicate(timeout=120)
    if how == signal.SIGINT:
        assert proc.returncode == 130, err
        assert f"resume with: ftkit run --resume {Path('run')}" in err
    assert len(rows(run)) == 1  # killed inside epoch 2
    resumed = start(["run", "--resume", "run"], tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming run after epoch 1" in out
    assert rows(run) == rows(reference)
    assert weights_hash(run) == weights_hash(reference)


# `last` of epoch 2 written slowly by the background writer, so that a kill lands
# while it is in flight (epoch 3 training meanwhile)
SLOW_WRITE = """
import os, time
import ftkit.checkpoint as ckpt

saves, save_state = [], ckpt.save_state


def slow(path, state):
    saves.append(path)
    if len(saves) == 2 and os.environ.get("SLOW_WRITE"):
        open(path.parent.parent / "writing", "w").close()
        time.sleep(120)
    save_state(path, state)


ckpt.save_state = slow
"""


def test_a_kill_while_a_background_write_is_in_flight_keeps_the_previous_last(reference, tmp_path):
    (tmp_path / "slowwrite.py").write_text(SLOW_WRITE)
    run, async_ = tmp_path / "run", ["--checkpoint-writer", "async", "--plugin", "slowwrite"]
    os.environ["SLOW_WRITE"] = "1"
    try:
        proc = start([*RUN, *async_, "--out", "run"], tmp_path)
    finally:
        del os.environ["SLOW_WRITE"]
    deadline = time.time() + 300
    while not (run / "writing").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert ckpt.load_state(run / "checkpoints" / ckpt.LAST)["run"]["epoch"] == 1  # whole
    resumed = start(["run", "--resume", "run", *async_], tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming run after epoch 1" in out
    assert rows(run) == rows(reference)
    assert weights_hash(run) == weights_hash(reference)
    assert ckpt.load_state(run / "checkpoints" / ckpt.LAST)["run"]["epoch"] == 3


def test_resume_of_a_finished_run_does_nothing(reference, ftkit):
    before = (reference / "checkpoints" / ckpt.LAST).read_bytes()
    result = ftkit("run", "--resume", str(reference))
    assert result.returncode == 0, result.stderr
    assert "already finished (completed); nothing to resume" in result.stdout
    assert (reference / "checkpoints" / ckpt.LAST).read_bytes() == before


def test_resume_refuses_changed_training_options(reference, ftkit, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    for name in ("config.toml", "plan.json", "metrics.jsonl"):
        (run / name).write_bytes((reference / name).read_bytes())
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ckpt.LAST).write_bytes((reference / "checkpoints/last.pt").read_bytes())
    line = one_line_error(ftkit("run", "--resume", str(run), "--batch-size", "4", "--loss", "dice"))
    assert "would change the training" in line
    assert "batch_size: 8 -> 4" in line and "loss: None -> 'dice'" in line


def test_resume_on_a_folder_that_is_not_a_run(ftkit, tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_line_error(ftkit("run", "--resume", "empty"))
    assert "--resume 'empty' is not an ftkit run" in line


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / ckpt.LAST
    state = {"model": {"w": torch.ones(3)}}
    ckpt.save_state(path, state)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_state(path, {"model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.LAST]


def test_non_finite_weights_are_never_written(tmp_path):
    with pytest.raises(RuntimeError, match="non-finite"):
        ckpt.save_state(tmp_path / ckpt.LAST, {"model": {"w": torch.tensor([float("nan")])}})
    assert list(tmp_path.iterdir()) == []


class Exploit:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def evil_checkpoint(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"format": ckpt.FORMAT, "model": Exploit(marker)}, fh)


@pytest.mark.parametrize("flag", ["--from", "--weights"])
def test_a_checkpoint_that_runs_code_is_refused(ftkit, tmp_path, flag):
    marker = tmp_path / "pwned"
    evil_checkpoint(tmp_path / "evil.pt", marker)
    result = ftkit(
        "run",
        flag,
        "evil.pt",
        "--image-size",
        "32",
        "--num-samples",
        "24",
        "--epochs",
        "2",
        env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
    )
    line = one_line_error(result)
    assert "evil.pt" in line and "corrupt or not a state dict" in line
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_resume_from_an_evil_last_checkpoint_is_refused(reference, ftkit, tmp_path):
    run = tmp_path / "evil_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_bytes((reference / "config.toml").read_bytes())
    marker = tmp_path / "pwned"
    evil_checkpoint(run / "checkpoints" / ckpt.LAST, marker)
    line = one_line_error(
        ftkit("run", "--resume", str(run), env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    )
    assert "last.pt' is corrupt or not an ftkit checkpoint" in line
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_corrupt_weights_are_named(ftkit, tmp_path, content):
    (tmp_path / "w.pt").write_bytes(content)
    line = one_line_error(
        ftkit(
            "run", "--weights", "w.pt", "--image-size", "32", "--num-samples", "24", "--epochs", "2"
        )
    )
    assert "w.pt' is corrupt" in line


def test_foreign_state_file_is_not_an_ftkit_checkpoint(tmp_path):
    torch.save({"hello": torch.ones(1)}, tmp_path / "last.pt")
    with pytest.raises(Exception, match="is not an ftkit checkpoint"):
        ckpt.load_state(tmp_path / "last.pt")
