"""How long a newcomer's first minutes take: a fresh clone, empty download caches, then
``make setup``, ``make smoke`` (twice: first run, then warm), ``make test-fast`` and, with
``--full``, ``make test``. Each step's wall time is written with the machine and its load
average before and after, since a busy 2-core machine runs the smoke recipe 2-3x slower.

    python -m bench.setup_timing --out bench/results/setup_timing_$(date +%F).json [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(step: str, command: list[str], cwd: Path, env: dict[str, str]) -> dict:
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    print(f"{step}: {seconds:.1f} s (exit {done.returncode}) {tail[0][:120]}", flush=True)
    return {"step": step, "command": " ".join(command), "wall_seconds": round(seconds, 1),
            "exit_status": done.returncode, "load_average_1min_before": round(load_before[0], 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2), "last_line": tail[0][:300]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--full", action="store_true", help="also time `make test` (about 20 minutes on 2 cores)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="setup-timing-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    # Empty caches: everything is downloaded, as on a new machine.
    env = {**os.environ, "UV_CACHE_DIR": str(work / "uv-cache"), "PIP_CACHE_DIR": str(work / "pip-cache")}
    steps = [("setup", ["make", "setup"]), ("smoke (first)", ["make", "smoke"]), ("smoke (again)", ["make", "smoke"]),
             ("test-fast", ["make", "test-fast"])]
    if args.full:
        steps.append(("test", ["make", "test"]))
    results = []
    for step, command in steps:
        results.append(timed(step, command, clone, env))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "date": date.today().isoformat(), "commit": commit, "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "caches": "empty uv and pip caches (UV_CACHE_DIR, PIP_CACHE_DIR in a new folder)",
            "steps": results}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
