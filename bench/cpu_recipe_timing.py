"""How long a CPU recipe takes on the machine at hand, and how much memory it holds: the whole
command a user runs (start-up, training, evaluations, checkpoints, the final save), the trainer's
own training time and tokens from the run's metrics, and the peak resident memory of the largest
process of the run. The recipes table quotes these for the CPU recipes.

    python -m bench.cpu_recipe_timing recipes/smollm2_fiqa_cpu.yaml \\
        --out bench/results/cpu_recipe_timing_smollm2_$(date +%F).json \\
        [--variant "NAME=--key value ..."]... [-- --key value ...]

Each variant (default: the recipe as it is) runs from scratch in a fresh output folder (the
recipe's ``output_dir`` plus ``-timing-NAME``); everything after ``--`` is passed to every variant,
e.g. ``--max_steps 5`` for a few steps' rate instead of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from bench.setup_timing import cpu_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_rows(output_dir: Path) -> list[dict]:
    """The rows the run's metrics log holds (plugins.loss_curves), or none."""
    from plugins.loss_curves.metrics_log import read_run_rows

    return read_run_rows(output_dir) if output_dir.is_dir() else []


def summarize(rows: list[dict]) -> dict:
    """Training time, steps and tokens as the run's trainer counted them, and its final evaluation."""
    summary = next((r for r in rows if r.get("kind") == "summary"), {})
    final = next((r for r in reversed(rows) if r.get("kind") in ("final_eval", "eval")), {})
    train = [r for r in rows if r.get("kind") == "train"]
    return {"train_runtime_seconds": summary.get("train_runtime"), "optimizer_steps": summary.get("step"),
            "epochs": summary.get("epoch"), "tokens_seen": summary.get("num_input_tokens_seen"),
            "tokens_per_second": (round(summary["num_input_tokens_seen"] / summary["train_runtime"], 1)
                                  if summary.get("num_input_tokens_seen") and summary.get("train_runtime") else None),
            "seconds_per_optimizer_step": (round(summary["train_runtime"] / summary["step"], 1)
                                           if summary.get("train_runtime") and summary.get("step") else None),
            "first_loss": train[0].get("loss") if train else None, "train_loss": summary.get("train_loss"),
            "final_eval_loss": final.get("eval_loss")}


def time_variant(recipe: Path, name: str, overrides: list[str], config_file: str) -> dict:
    """One run of ``recipe`` with ``overrides``, from scratch, in a fresh output folder."""
    from recipekit.config.parse import load_recipe_file

    output_dir = REPO_ROOT / (str(load_recipe_file(recipe).get("output_dir", "runs/run")) + f"-timing-{name}")
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
               "--num_cpu_threads_per_process", str(os.cpu_count() or 1), "-m", "recipes.run", str(recipe),
               *overrides, "--output_dir", str(output_dir), "--resume_from_checkpoint", ""]  # from scratch
    load_before = os.getloadavg()[0]
    peak_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    # ru_maxrss of the waited-for descendants (KiB on Linux): the largest of them, the training process. It only
    # grows over this process's life, so a variant that peaks lower than an earlier one has no figure of its own.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"name": name, "overrides": shlex.join(overrides), "command": shlex.join(command),
            "exit_status": done.returncode, "wall_seconds": round(wall, 1),
            "peak_resident_memory_gib": round(peak / 2**20, 2) if peak > peak_before else None,
            "load_average_1min_before": round(load_before, 2), "load_average_1min_after": round(os.getloadavg()[0], 2),
            **summarize(run_rows(output_dir))}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_recipe_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config_file", default="accelerate_configs/cpu.yaml")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=--key value ...: the recipe with these overrides (repeatable; run in the order given, "
                             "lowest memory first, since the peak is a running maximum); default: the recipe as it is")
    args = parser.parse_args(argv)

    variants = [v.partition("=") for v in args.variant] or [("as-committed", "=", "")]
    report = {"date": date.today().isoformat(), "recipe": str(args.recipe),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores", "common_overrides": shlex.join(common), "results": []}
    for name, _, overrides in variants:
        report["results"].append(time_variant(args.recipe, name, shlex.split(overrides) + common, args.config_file))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every variant
        print(json.dumps(report["results"][-1], indent=2), flush=True)
    return int(any(r["exit_status"] != 0 for r in report["results"]))


if __name__ == "__main__":
    raise SystemExit(main())
