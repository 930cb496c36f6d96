"""How fast the first answers come: a misspelt key and ``--help`` against ``import torch``.

    python -m bench.cli_timing --repeats 5 --out bench/results/cli_timing_DATE.json

Each command runs ``--repeats`` times in a fresh interpreter (after one unmeasured run that
warms the file cache); the median wall time is reported. A recipe problem and ``--help``
should answer before torch could even be imported, since they are checked from the key
schema (``recipekit.config.schema``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "misspelt key": [sys.executable, "-m", "recipes.run", "recipes/smoke.yaml", "--lerning_rate", "1e-3"],
    "bad value": [sys.executable, "-m", "recipes.run", "recipes/smoke.yaml", "--num_train_epochs", "many"],
    "--help": [sys.executable, "-m", "recipes.run", "--help"],
}


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("cli_timing.json"))
    args = parser.parse_args(argv)
    results = {}
    for name, command in COMMANDS.items():
        seconds(command)  # warm the file cache
        runs = [seconds(command) for _ in range(args.repeats)]
        results[name] = {"median_seconds": round(statistics.median(runs), 3), "runs": [round(r, 3) for r in runs]}
        print(f"{name:14s} median {results[name]['median_seconds']:.3f} s", flush=True)
    report = {"date": date.today().isoformat(), "cpu_count": os.cpu_count(), "machine": platform.platform(),
              "python": platform.python_version(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
