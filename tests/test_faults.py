"""Fault injection (issue 12): runs killed at every kind of stage boundary
resume bit-identically; a full disk, a file that vanishes mid-run and a
second writer on the same run directory each stop with one line and lose
nothing. docs/guarantees.md lists each promise with its test here.

Faults come from a plugin the runs load (``FAULTS``), steered by environment
variables, so every fault hits at an exact point of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import one_line_error

import ftkit.checkpoint as ckpt

FAULTS = """
import errno, os, signal
import ftkit


def at(name, value):
    return os.environ.get(name) == str(value)


@ftkit.hookimpl
def ftkit_stage_start(run, stage, index):
    if at("FAULT_KILL_AT", f"stage:{index + 1}"):  # the stage is entered, nothing trained
        os.kill(os.getpid(), signal.SIGKILL)


@ftkit.hookimpl
def ftkit_epoch_end(run, record):
    # before `last` is written: the checkpoint holds the epoch before
    if at("FAULT_KILL_AT", f"epoch:{record['epoch']}"):
        os.kill(os.getpid(), signal.SIGKILL)
    if at("FAULT_DISK_FULL_AT", record["epoch"]):  # every later write finds the disk full
        import safetensors.torch
        import torch

        def full(*args, **kwargs):
            path = args[1] if len(args) > 1 else kwargs.get("f") or kwargs.get("filename")
            with open(path, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        torch.save = full
        safetensors.torch.save_file = full
    if at("FAULT_DELETE_AT", record["epoch"]):
        os.remove(os.environ["FAULT_FILE"])
    if at("FAULT_CORRUPT_AT", record["epoch"]):  # half of it, as a crashed copy leaves it
        path = os.environ["FAULT_FILE"]
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    if at("FAULT_SLEEP_AT", record["epoch"]):
        import time
        time.sleep(float(os.environ["FAULT_SLEEP"]))
"""

SEG = ["--model", "smp:unet:tu-mobilenetv3_small_050", "--image-size", "32"]
SMALL = [*SEG, "--num-samples", "24", "--batch-size", "4", "--plugin", "faults"]
TIMING = ("seconds", "images_per_second")


@pytest.fixture
def faults(tmp_path):
    (tmp_path / "faults.py").write_text(FAULTS)
    return tmp_path


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]


def last(run: Path) -> dict:
    return ckpt.load_state(run / "checkpoints" / ckpt.LAST)


def tensors_hash(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors, key=str):
        digest.update(str(name).encode())
        digest.update(tensors[name].numpy().tobytes())
    return digest.hexdigest()


def optimizer_hash(run: Path) -> str:
    """Every tensor of the optimizer's state, per parameter that has one."""
    state = last(run)["loop"]["optimizer"]["state"]
    flat = {f"{p}.{k}": v for p, s in state.items() for k, v in s.items() if torch.is_tensor(v)}
    return tensors_hash(flat)


def same_run(run: Path, reference: Path) -> None:
    assert rows(run) == rows(reference)
    assert tensors_hash(last(run)["model"]) == tensors_hash(last(reference)["model"])
    assert optimizer_hash(run) == optimizer_hash(reference)


# --- 1: resume across every stage boundary ----------------------------------------

STAGED = {
    # head for 2 epochs, then three unfreezing steps of 2 epochs each
    "gradual": (["--strategy", "gradual", "-o", "every=2", "--epochs", "8"], []),
    "two-stage": (["--strategy", "two-stage", "-o", "stage1_epochs=2", "--epochs", "4"], []),
    "loss-switch": (
        ["--strategy", "loss-switch", "-o", "stage1_epochs=2", "--epochs", "4"],
        ["--from", "baseline"],
    ),
}
# (where the kill hits, the epoch `last` then holds)
KILLS = {
    "gradual": [("epoch:4", 3), ("stage:3", 4)],  # inside stage 2; entering stage 3
    "two-stage": [("epoch:3", 2), ("stage:2", 2)],  # first epoch of stage 2; entering it
    "loss-switch": [("epoch:3", 2), ("stage:2", 2)],  # after the baseline and stage 1
}


@pytest.mark.parametrize("strategy", STAGED)
def test_a_kill_at_a_stage_boundary_resumes_bit_identically(ftkit, faults, strategy):
    args, start = STAGED[strategy]
    if start:  # a converged baseline to switch the loss of
        assert ftkit("run", *SMALL, "--epochs", "2", "--out", "baseline").returncode == 0
    assert ftkit("run", *SMALL, *args, *start, "--out", "reference").returncode == 0
    for where, held in KILLS[strategy]:
        run = f"killed-{where.replace(':', '-')}"
        killed = ftkit("run", *SMALL, *args, *start, "--out", run, env={"FAULT_KILL_AT": where})
        assert killed.returncode == -9, killed.stderr
        assert last(faults / run)["run"]["epoch"] == held
        resumed = ftkit("run", "--resume", run, "--plugin", "faults")
        assert resumed.returncode == 0, resumed.stderr
        assert f"resuming {run} after epoch {held}" in resumed.stdout
        same_run(faults / run, faults / "reference")


# --- 3: disk faults -------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(ftkit, faults):
    # the background writer: its error surfaces at the next wait (the training
    # thread's write fails the same way, test_a_failed_write_removes_the_partial_file...)
    args = [*SMALL, "--strategy", "full", "--epochs", "3", "--out", "run"]
    args += ["--checkpoint-writer", "async"]
    result = ftkit("run", *args, env={"FAULT_DISK_FULL_AT": "2"})
    line = one_line_error(result, code=1)
    assert "No space left on device" in line and "MiB free there" in line
    assert "the previous" in line and "is unchanged" in line
    run = faults / "run"
    assert last(run)["run"]["epoch"] == 1  # epoch 1's, whole and readable
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    resumed = ftkit("run", "--resume", "run", "--plugin", "faults")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3]


def test_a_failed_write_removes_the_partial_file_and_names_the_free_space(tmp_path, monkeypatch):
    import errno

    from ftkit.errors import WriteError

    path = tmp_path / ckpt.LAST
    ckpt.save_state(path, {"model": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def full(obj, f):
        Path(f).write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match=r"cannot write '.*last.pt': No space left on device"):
        ckpt.save_state(path, {"model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.LAST]


def test_a_resume_drops_a_half_written_metrics_line(ftkit, faults):
    args = [*SMALL, "--epochs", "2", "--out", "run"]
    assert ftkit("run", *args, env={"FAULT_KILL_AT": "epoch:2"}).returncode == -9
    metrics = faults / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"stage": "full", "epoch": 3, "train_lo')
    resumed = ftkit("run", "--resume", "run")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in rows(faults / "run")] == [1, 2]


@pytest.mark.parametrize("cut", [0.5, 0.0])
def test_a_truncated_last_checkpoint_is_named_and_never_skipped(ftkit, faults, cut):
    args = [*SMALL, "--epochs", "2", "--out", "run"]
    assert ftkit("run", *args, env={"FAULT_KILL_AT": "epoch:2"}).returncode == -9
    path = faults / "run" / "checkpoints" / ckpt.LAST
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])  # what a power loss leaves
    line = one_line_error(ftkit("run", "--resume", "run"))
    assert f"checkpoint '{Path('run/checkpoints/last.pt')}' is corrupt" in line
    assert not (faults / "run" / "summary.json").exists()


# --- 4: data that changes under a running run -----------------------------------------


def folder(root: Path, n: int = 12) -> Path:
    """Two classes of noisy images, reddish and bluish."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 120, (16, 16, 3), dtype=np.uint8)
            pixels[..., 2 * c] += 120
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


CLS = ["--task", "classification", "--model", "tv:mobilenet_v2", "--image-size", "16"]


@pytest.mark.parametrize("fault", ["FAULT_DELETE_AT", "FAULT_CORRUPT_AT"])
def test_an_image_that_goes_bad_mid_run_is_named_and_the_run_resumes(ftkit, faults, fault):
    data = folder(faults / "data")
    victim = data / "a" / "0.png"
    original = victim.read_bytes()
    args = [*CLS, "--data", "data", "--batch-size", "4", "--epochs", "3", "--plugin", "faults"]
    # after epoch 1 (whose `last` is written after the plugin), epoch 2 reads it
    line = one_line_error(
        ftkit("run", *args, "--out", "run", env={fault: "1", "FAULT_FILE": str(victim)})
    )
    assert f"cannot read image '{victim}'" in line
    assert last(faults / "run")["run"]["epoch"] == 1
    victim.write_bytes(original)  # the file is back: the run goes on from `last`
    resumed = ftkit("run", "--resume", "run")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in rows(faults / "run")] == [1, 2, 3]


# --- 5: one writer per run directory ----------------------------------------------------


def test_a_second_run_on_a_locked_directory_names_the_holder(ftkit, faults):
    args = [*SMALL, "--epochs", "3", "--out", "run"]
    env = {**os.environ, "FAULT_SLEEP_AT": "2", "FAULT_SLEEP": "60"}
    first = subprocess.Popen(
        [sys.executable, "-m", "ftkit", "run", *args],
        cwd=faults,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        metrics = faults / "run" / "metrics.jsonl"
        while not metrics.exists() or len(rows(faults / "run")) < 2:  # asleep in epoch 2's end
            assert first.poll() is None and time.time() < deadline, first.stderr
            time.sleep(0.1)
        for second in (["run", *args], ["run", "--resume", "run"]):
            started = time.time()
            line = one_line_error(ftkit(*second))
            assert f"pid {first.pid}" in line and "another ftkit run" in line
            assert time.time() - started < 15  # at once, not after the first one ends
    finally:
        first.kill()
        first.wait()
    # SIGKILL dropped the lock with the process: the run resumes
    resumed = ftkit("run", "--resume", "run")
    assert resumed.returncode == 0, resumed.stderr


# --- 4: data folders that hold what nobody expected -------------------------------------


def test_a_symlink_loop_is_named(tmp_path):
    from ftkit.data.folders import load_folder
    from ftkit.errors import UsageError

    data = folder(tmp_path / "data")
    loop = data / "a" / "loop.png"
    os.symlink(loop, loop)
    with pytest.raises(UsageError, match=f"'{loop}' is a symlink that leads nowhere"):
        load_folder(data, "classification", image_size=16)


def test_an_empty_class_folder_is_named(tmp_path):
    from ftkit.data.folders import load_folder
    from ftkit.errors import UsageError

    data = folder(tmp_path / "data")
    (data / "c").mkdir()
    with pytest.raises(UsageError, match=f"class folder '{data / 'c'}' holds no images"):
        load_folder(data, "classification", image_size=16)


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    from PIL import Image

    from ftkit.data.folders import load_folder
    from ftkit.errors import UsageError

    data = folder(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16x16 is over twice the limit
    with pytest.raises(UsageError, match=r"cannot read image '.*\.png' \(DecompressionBombError"):
        load_folder(data, "classification", image_size=16)


def test_file_names_that_are_not_utf8_are_read_and_fingerprinted(tmp_path):
    from ftkit.data import fingerprint
    from ftkit.data.folders import load_folder

    data = folder(tmp_path / "data")
    good = data / "a" / "0.png"
    os.rename(bytes(good), bytes(data / "a") + b"/\xff\xfe.png")  # Latin-1 bytes, not UTF-8
    splits = load_folder(data, "classification", image_size=16)
    assert len(splits.train) + len(splits.val) == 24
    assert fingerprint(str(data)).startswith("24 files")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_an_unreadable_image_is_named(tmp_path):
    from ftkit.data.folders import load_folder
    from ftkit.errors import UsageError

    data = folder(tmp_path / "data")
    victim = data / "b" / "3.png"
    victim.chmod(0)
    with pytest.raises(UsageError, match=f"cannot read image '{victim}' \\(PermissionError"):
        load_folder(data, "classification", image_size=16)
