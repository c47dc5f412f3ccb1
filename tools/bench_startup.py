"""CLI start-up time of the commands that must not import torch.

    python tools/bench_startup.py [--repeat 10]

Runs each command as a fresh process and reports the median wall time, next
to `python -c "import torch"` for scale.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "ftkit --help": [sys.executable, "-m", "ftkit", "--help"],
    "ftkit strategies": [sys.executable, "-m", "ftkit", "strategies"],
    "ftkit plugins": [sys.executable, "-m", "ftkit", "plugins"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def median_seconds(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"| command | median of {args.repeat} (s) |\n|---|---|")
    for name, cmd in COMMANDS.items():
        print(f"| `{name}` | {median_seconds(cmd, args.repeat):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
