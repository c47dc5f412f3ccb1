"""The ``hf`` model family: build, pretrained weights and anatomy.

ftkit's training loop calls ``model(x)`` with one tensor and expects logits.
``TextClassifier`` wraps a Hugging Face model so: ``x`` is (batch, 2, length)
holding token ids and the attention mask. Its parameters are the Hugging Face
model's under ``hf.`` (``hf.bert.encoder.layer.0...``), which is what
``-o regroup=...`` patterns match.

Weights: ``build`` gives random weights, as every ftkit family does.
``--weights pretrained`` reads the folder's ``model.safetensors`` (or
``pytorch_model.bin``) and ftkit's own loader (``fit_weights``) puts it in:
a backbone tensor missing or of another shape is an error, and a head tensor
the file lacks (the new classifier) "starts fresh", said in the load report.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ftkit import BACKBONE, HEAD, NamedWeights, UsageError, from_prefixes, hub_file, read_state

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# Buffers older checkpoints saved and transformers no longer does: not weights.
NOT_WEIGHTS = ("position_ids",)


class TextClassifier(nn.Module):
    """A sequence classifier taking ``x`` = stack(token ids, attention mask)."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=x[:, 0], attention_mask=x[:, 1]).logits


# --- where a model lives -------------------------------------------------------


def model_folder(rest: str) -> Path:
    """``hf:PATH`` (a folder with config.json) or ``hf:NAME`` from the Hub's cache."""
    path = Path(rest).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"--model hf:{rest}: '{path}' has no config.json")
        return path
    if path.exists() or rest.startswith((".", "/", "~")) or rest.count("/") > 1:
        raise UsageError(f"--model hf:{rest}: model folder '{rest}' not found")

    try:
        return hub_file(rest, "config.json", f"--model hf:{rest}").parent
    except UsageError:
        raise
    except Exception as exc:  # a name the Hub refuses (HFValidationError, ...)
        raise UsageError(f"--model hf:{rest}: not a model folder or Hub name ({exc})") from None


def hf_config(rest: str, num_labels: int | None = None):
    from transformers import AutoConfig

    folder = model_folder(rest)
    extra = {} if num_labels is None else {"num_labels": num_labels}
    try:
        return AutoConfig.from_pretrained(folder, **extra)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"--model hf:{rest}: cannot read {folder / 'config.json'}: {first}"
        ) from None


# --- build ----------------------------------------------------------------------


def build_model(rest: str, *, num_classes: int, task: str) -> TextClassifier:
    if task != "classification":
        raise UsageError(f"--model hf:{rest} classifies texts; use --task text-classification")
    from transformers import AutoModelForSequenceClassification

    config = hf_config(rest, num_labels=num_classes)
    try:
        hf = AutoModelForSequenceClassification.from_config(config)
    except ValueError as exc:  # an architecture with no sequence-classification head
        first = str(exc).strip().splitlines()[0]
        raise UsageError(f"--model hf:{rest}: no sequence classifier for it ({first})") from None
    return TextClassifier(hf)


# --- pretrained weights ---------------------------------------------------------


def pretrained_weights(rest: str, name: str) -> NamedWeights:

    if name != "pretrained":
        raise UsageError(
            f"--weights {name}: hf models know 'pretrained' (the folder's own weights) or a FILE"
        )
    folder = model_folder(rest)
    path = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if path is None:
        raise UsageError(f"--weights pretrained: '{folder}' has none of {', '.join(WEIGHT_FILES)}")
    return NamedWeights(read_weights(path), f"hf:{rest} ({path.name})")


def read_weights(path: Path) -> dict[str, torch.Tensor]:

    if path.name.endswith(".index.json"):  # sharded: the index names the files
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state(path.parent / shard))
        return state
    return read_state(path)


def to_model_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A Hugging Face checkpoint's keys as the wrapper names them.

    A base model's file (``BertModel``: ``embeddings...``) goes under the base
    model (``hf.bert.embeddings...``); a task model's (``bert.embeddings...``,
    ``classifier...``) under ``hf.``. Keys of heads the model has no place
    for (a pretraining checkpoint's ``cls.predictions...``) stay as they are:
    ftkit's loader then refuses the file, naming them.
    """
    if not isinstance(model, TextClassifier) or all(k.startswith("hf.") for k in state):
        return state
    own = model.state_dict()
    base = model.hf.base_model_prefix
    out = {}
    for key, value in state.items():
        candidates = (f"hf.{key}", f"hf.{base}.{key}")
        fits = next((c for c in candidates if c in own), None)
        if fits is None and key.rpartition(".")[2] in NOT_WEIGHTS:
            continue
        out[fits or candidates[0]] = value
    return out


# --- anatomy --------------------------------------------------------------------


def anatomy(model: TextClassifier):
    """``embeddings``, ``layer.N`` for each block, then the head: what the base
    model holds after its blocks (BERT's ``pooler``, a final norm) and what the
    task model adds (``classifier``)."""
    hf = model.hf
    base_name = hf.base_model_prefix
    base = hf.base_model
    if base is hf:
        raise UsageError(f"anatomy 'hf': {type(hf).__name__} has no base model")
    at = f"hf.{base_name}"
    children = dict(base.named_children())
    embeddings = [n for n in children if "emb" in n or n in ("wte", "wpe")]
    blocks = layer_list(base)
    if not embeddings or blocks is None:
        raise UsageError(
            f"anatomy 'hf': no embeddings and layer list found in {type(base).__name__} "
            f"(children: {', '.join(children)}); group it with -o regroup=..."
        )
    blocks_path, n_blocks = blocks
    top = blocks_path.split(".")[0]
    params = {n.split(".")[0] for n, _ in base.named_parameters()}
    after = [n for n in children if n in params and n not in embeddings and n != top]
    heads = [n for n, _ in hf.named_children() if n != base_name]
    layers = [("embeddings", [f"{at}.{n}" for n in embeddings], BACKBONE)]
    layers += [(f"layer.{i}", [f"{at}.{blocks_path}.{i}"], BACKBONE) for i in range(n_blocks)]
    layers += [(n, [f"{at}.{n}"], HEAD) for n in after]
    layers.append(("classifier", [f"hf.{n}" for n in heads], HEAD))
    return from_prefixes(model, layers, "hf")


def layer_list(base: nn.Module) -> tuple[str, int] | None:
    """The path and length of the base model's list of blocks: the ModuleList
    (at most two levels down: ``encoder.layer``, ``layers``, ``h``) with the
    most parameters."""
    found = []
    for name, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and name and name.count(".") <= 1 and len(module):
            found.append((sum(p.numel() for p in module.parameters()), name, len(module)))
    if not found:
        return None
    _, name, length = max(found)
    return name, length
