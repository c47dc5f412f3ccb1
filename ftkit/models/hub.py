"""Pretrained weights from a library's own cache (torch hub's, Hugging Face's).

They come from where the library would put them without ftkit, and are
downloaded there when the machine is online. Offline, a missing file is one
line naming the file, the folder it was looked for in, and ``--weights FILE``.
"""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from ftkit.errors import UsageError

DOWNLOAD_TIMEOUT = 20.0  # seconds without an answer before a download counts as offline


@contextlib.contextmanager
def bounded_network(seconds: float = DOWNLOAD_TIMEOUT) -> Iterator[None]:
    """A download that gets no answer fails in seconds instead of hanging, and
    the libraries' progress and retry chatter stays off the user's screen."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        socket.setdefaulttimeout(previous)


def reachable(url: str, seconds: float = 5.0) -> str | None:
    """None when ``url``'s host answers, else why not; a library that retries
    with back-off (the Hub's client) is asked only when it can succeed."""
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=seconds).close()
    except OSError as exc:
        return offline_reason(exc)
    return None


def not_cached(what: str, filename: str, folder: str | Path, reason: str) -> UsageError:
    return UsageError(
        f"{what}: '{filename}' is not in {folder} and could not be downloaded ({reason}); "
        f"put the file there, or give it with --weights FILE"
    )


def offline_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:120]


def hub_file(repo_id: str, filename: str, what: str, revision: str | None = None) -> Path:
    """A file of a Hugging Face Hub repository, from the Hub's cache (timm's
    and smp's weights live there), downloaded when missing and online."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else reachable(constants.ENDPOINT)
    if offline:
        raise not_cached(what, filename, folder, offline)
    try:
        with bounded_network():
            return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:  # no such repo, no such file: all the same to the user
        raise not_cached(what, filename, folder, offline_reason(exc)) from None


def hub_checkpoint(url: str, what: str) -> tuple[Path, dict]:
    """A checkpoint at ``url`` through torch hub's cache, read weights-only."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(urlparse(url).path).name
    try:
        with bounded_network():
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", progress=False, weights_only=True
            )
    except OSError as exc:
        raise not_cached(what, filename, folder, offline_reason(exc)) from None
    return folder / filename, state
