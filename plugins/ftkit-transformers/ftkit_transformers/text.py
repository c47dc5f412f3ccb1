"""``--task text-classification`` data: texts and labels from CSV or JSON lines.

``--data`` is one of

* a file, ``reviews.csv`` or ``reviews.jsonl``: split into train and
  validation (a fifth) with ftkit's fixed split seed, the one that splits
  image folders, so a baseline and its fine-tuned model see the same
  validation texts;
* a folder holding ``train.csv`` and ``val.csv`` (or ``.jsonl``): used as
  they are.

Columns are ``text`` and ``label``; ``--text-column review --label-column
sentiment`` name others, and ``--max-length 64`` the tokens kept per text
(default ``MAX_LENGTH``, 2..512). The three are this plugin's options
(``OPTIONS``, added through ``ftkit_add_options``): also ``FTKIT_TEXT_COLUMN``
..., top-level keys of a config file, and recorded in the run's ``config.toml``.
The older spelling after a ``#`` in ``--data`` stays as an alias:
``--data 'reviews.csv#text=review,label=sentiment,max_length=64'``. A key
there wins over its option at the option's default; an option given a
different value is an error (one or the other, not both). Labels are names
(sorted to class indices) or integers 0..N-1. An empty text, a missing label or a label
the training split does not have is one line naming the file and row.

Texts are tokenised once, by the model's own tokenizer, truncated to
``--max-length`` tokens. An item is a (2, length) tensor: token ids and the
attention mask. Training batches are padded to their longest text
(``PadCollate``); ftkit's validation loader stacks items as they are, so
validation items are padded once to the longest validation text.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftkit import DataSplits, Option, UsageError

MAX_LENGTH = 128
MAX_LENGTHS = (2, 512)  # what --max-length (and #max_length=) may be
SUFFIXES = (".csv", ".jsonl", ".json")
VAL_FRACTION = 0.2


def _length(n: int) -> str | None:
    low, high = MAX_LENGTHS
    return None if low <= n <= high else f"must be {low}..{high}"


# This plugin's command-line options (ftkit_add_options), with the key of each in
# the older PATH#KEY=VALUE spelling of --data.
OPTIONS = (
    Option(
        "text_column",
        str,
        "text",
        "text-classification: the CSV column (JSON-lines key) holding the text",
    ),
    Option(
        "label_column",
        str,
        "label",
        "text-classification: the CSV column (JSON-lines key) holding the label",
    ),
    Option(
        "max_length",
        int,
        MAX_LENGTH,
        f"text-classification: tokens kept per text ({MAX_LENGTHS[0]}..{MAX_LENGTHS[1]}), "
        "longer ones truncated",
        check=_length,
    ),
)
SPEC_KEYS = {"text": "text_column", "label": "label_column", "max_length": "max_length"}


# --- reading ------------------------------------------------------------------------


def parse_spec(spec: str, options: Mapping[str, Any] | None = None) -> tuple[Path, str, str, int]:
    """``PATH[#text=COL,label=COL,max_length=N]`` and the plugin's options ->
    (path, text column, label column, max length). A key after ``#`` wins over
    its option at the default; an option given another value is an error."""
    path, _, extra = spec.partition("#")
    defaults = {o.name: o.default for o in OPTIONS}
    chosen = {**defaults, **{k: v for k, v in (options or {}).items() if k in defaults}}
    suffix: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in extra.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in SPEC_KEYS or not value.strip():
            raise UsageError(
                f"--data '{spec}': expected PATH#text=COLUMN,label=COLUMN,max_length=N, "
                f"got '{item}'"
            )
        suffix[SPEC_KEYS[key.strip()]] = value.strip()
    if "max_length" in suffix:
        text = suffix["max_length"]
        if not text.isdigit() or _length(int(text)):
            low, high = MAX_LENGTHS
            raise UsageError(f"--data '{spec}': max_length must be {low}..{high}, got {text}")
        suffix["max_length"] = int(text)
    for name, value in suffix.items():
        if chosen[name] != defaults[name] and chosen[name] != value:
            key = next(k for k, n in SPEC_KEYS.items() if n == name)
            raise UsageError(
                f"--data '{spec}' says {key}={value} and --{name.replace('_', '-')} "
                f"{chosen[name]}: give one of the two"
            )
        chosen[name] = value
    return Path(path), chosen["text_column"], chosen["label_column"], chosen["max_length"]


def read_rows(path: Path, text_col: str, label_col: str) -> list[tuple[str, str, str]]:
    """(text, label as written, where) per row; every problem names file and row."""
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"'{path}': expected a .csv or .jsonl file")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"'{path}' is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"'{path}' cannot be read: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        records = _csv_records(path, raw, text_col, label_col)
    else:
        records = _jsonl_records(path, raw)
    rows = []
    for where, record in records:
        for column in (text_col, label_col):
            if column not in record:
                raise UsageError(f"'{path}' {where}: no '{column}' column")
        text, label = record[text_col], record[label_col]
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"'{path}' {where}: empty text")
        if label is None or isinstance(label, bool) or str(label).strip() == "":
            raise UsageError(f"'{path}' {where}: empty label")
        if not isinstance(label, (str, int)):
            raise UsageError(f"'{path}' {where}: label {label!r} is neither a name nor an integer")
        rows.append((text, str(label).strip(), where))
    if not rows:
        raise UsageError(f"'{path}' holds no rows")
    return rows


def _csv_records(path, raw, text_col, label_col):
    reader = csv.DictReader(raw.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in (text_col, label_col) if c not in header]
    if missing:
        raise UsageError(
            f"'{path}' row 1: no '{missing[0]}' column (columns: {', '.join(header) or 'none'}; "
            "name yours with --text-column COLUMN and --label-column COLUMN)"
        )
    try:
        for line, record in enumerate(reader, start=2):
            if None in record:  # more fields than the header has
                raise UsageError(f"'{path}' row {line}: more fields than the header's")
            yield f"row {line}", record
    except csv.Error as exc:
        raise UsageError(f"'{path}' row {reader.line_num}: not CSV ({exc})") from None


def _jsonl_records(path, raw):
    for line, text in enumerate(raw.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"'{path}' line {line}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"'{path}' line {line}: expected a JSON object")
        yield f"line {line}", record


def find_split(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{s}" for s in SUFFIXES if (folder / f"{split}{s}").is_file()]
    if len(found) != 1:
        what = "none" if not found else ", ".join(p.name for p in found)
        raise UsageError(f"'{folder}': expected one {split}.csv or {split}.jsonl, found {what}")
    return found[0]


def class_names(labels: list[str]) -> list[str]:
    """Integers 0..N-1 stay in their order; names are sorted."""
    distinct = set(labels)
    if all(x.lstrip("-").isdigit() for x in distinct):
        numbers = sorted(int(x) for x in distinct)
        if numbers[0] < 0:
            raise UsageError(f"labels must be names or integers from 0, got {numbers[0]}")
        return [str(i) for i in range(numbers[-1] + 1)]
    return sorted(distinct)


def to_indices(rows, names, path):
    index = {name: i for i, name in enumerate(names)}
    out = []
    for _, label, where in rows:
        if label not in index:
            raise UsageError(
                f"'{path}' {where}: label '{label}' is not one of the training labels "
                f"({', '.join(names)})"
            )
        out.append(index[label])
    return out


# --- the data splits ----------------------------------------------------------------


def load_text(
    spec: str,
    *,
    model: str,
    seed: int,
    num_classes: int | None,
    options: Mapping[str, Any] | None = None,
) -> DataSplits:
    """``options``: ftkit's ``config.plugin_options`` (this plugin reads
    ``text_column``, ``label_column`` and ``max_length``; missing ones are at
    their defaults)."""
    path, text_col, label_col, max_length = parse_spec(spec, options)
    if not model.startswith("hf:"):
        raise UsageError(
            f"--task text-classification needs a text model, --model hf:PATH or hf:NAME "
            f"(got '{model}')"
        )
    if spec.startswith("builtin:") or not path.exists():
        raise UsageError(
            f"--data '{spec}': not found; text-classification reads a .csv or .jsonl file, "
            "or a folder with train.* and val.*"
        )
    if path.is_dir():
        train_path, val_path = find_split(path, "train"), find_split(path, "val")
        train = read_rows(train_path, text_col, label_col)
        val = read_rows(val_path, text_col, label_col)
    else:
        train_path = val_path = path
        train, val = split(read_rows(path, text_col, label_col), path)
    names = class_names([label for _, label, _ in train])
    if num_classes is not None:
        if num_classes < len(names):
            raise UsageError(
                f"--num-classes {num_classes} is fewer than the {len(names)} labels of "
                f"'{spec}' ({', '.join(names)})"
            )
        names += [f"class_{i}" for i in range(len(names), num_classes)]
    train_y = to_indices(train, names, train_path)
    val_y = to_indices(val, names, val_path)
    tokenizer = load_tokenizer(model.removeprefix("hf:"))
    train_x = tokenize(tokenizer, [text for text, _, _ in train], max_length)
    val_x = tokenize(tokenizer, [text for text, _, _ in val], max_length)
    pad = tokenizer.pad_token_id or 0
    return DataSplits(
        "classification",
        TextDataset(train_x, train_y),
        TextDataset(val_x, val_y, pad_to=max(len(ids) for ids in val_x), pad_id=pad),
        len(names),
        names,
        collate=PadCollate(pad),
    )


def split(rows, path):
    import numpy as np

    n = len(rows)
    n_val = max(1, round(n * VAL_FRACTION))
    if n_val >= n:
        raise UsageError(f"'{path}' has {n} row(s), too few to split off a validation set")
    # A fixed seed, not the training one: a baseline and its fine-tune share the split.
    # (Rows have no path to hash; adding rows reshuffles this split: see docs/text.md.)
    order = np.random.default_rng(0).permutation(n)
    val = set(order[:n_val].tolist())
    return [r for i, r in enumerate(rows) if i not in val], [rows[i] for i in sorted(val)]


def load_tokenizer(rest: str):
    from transformers import AutoTokenizer

    from ftkit_transformers.model import model_folder

    folder = model_folder(rest)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--model hf:{rest}: no tokenizer in '{folder}' ({first})") from None


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


class TextDataset:
    """Items ``(x, label)``: x is (2, length) int64, token ids over attention mask."""

    def __init__(self, ids: list[list[int]], labels: list[int], pad_to=None, pad_id=0):
        self.ids, self.labels, self.pad_to, self.pad_id = ids, labels, pad_to, pad_id

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        import torch

        ids = self.ids[i]
        x = pack([ids], self.pad_to or len(ids), self.pad_id)[0]
        return x, torch.tensor(self.labels[i])


class PadCollate:
    """A training batch padded to its longest text."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch):
        import torch

        longest = max(int(x[1].sum()) for x, _ in batch)
        ids = [x[0, : int(x[1].sum())].tolist() for x, _ in batch]
        return pack(ids, longest, self.pad_id), torch.stack([y for _, y in batch])


def pack(ids: list[list[int]], length: int, pad_id: int):
    import torch

    x = torch.full((len(ids), 2, length), pad_id, dtype=torch.int64)
    x[:, 1] = 0
    for row, seq in enumerate(ids):
        x[row, 0, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
        x[row, 1, : len(seq)] = 1
    return x
