"""GPU memory a user will see: the whole process, with evaluation and checkpoints on, per recipe.

    python -m bench.memory --data_dir data/fiqa-sample --work_dir /tmp/mem \\
        --recipe recipes/nemotron_fiqa_qlora_lean.yaml --recipe recipes/nemotron_fiqa_qlora.yaml --out memory.json

``bench.throughput`` reports PyTorch's allocated peak with evaluation off; a user sizing a GPU
needs what ``nvidia-smi`` shows for the process (CUDA context, allocator cache and
fragmentation included) through training, evaluation and a checkpoint save. Each recipe runs
as users run it (``python -m recipes.run``, its own batch sizes, evaluation and a checkpoint
every 2 steps, 6 steps) on random weights of the exact Nemotron-Nano-8B shape, while
``nvidia-smi`` is read every 0.5 s. Reported per recipe: that peak, PyTorch's allocated and
reserved peaks, and whether the peak leaves room on a 12 GB card (11.2 GiB usable).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from bench.scaling import NO_MULTICAST, GpuMemorySampler
from bench.throughput import build_assets

TWELVE_GB_USABLE_GIB = 11.2  # a "12 GB" card: 12,288 MiB less what the driver keeps


def run_recipe(recipe: str, model_dir: Path, data_dir: Path, output_dir: Path, log: Path) -> dict:
    command = [sys.executable, "-m", "recipes.run", recipe, "--model_name_or_path", str(model_dir),
               "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--overwrite_output_dir", "true",
               "--resume_from_checkpoint", "", "--max_steps", "6", "--eval_strategy", "steps", "--eval_steps", "2",
               "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1", "--report_to", "none"]
    started = time.perf_counter()
    with log.open("w") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **NO_MULTICAST})
        with GpuMemorySampler(per_process=True) as sampler:
            code = child.wait()
    state_file = output_dir / "trainer_state.json"
    history = json.loads(state_file.read_text())["log_history"] if state_file.is_file() else []
    allocated = max((h.get("peak_memory_gib", 0) for h in history), default=None)
    reserved = max((h.get("peak_reserved_gib", 0) for h in history), default=None)
    process_peak = sampler.peaks.get(child.pid)
    evaluations = sum(1 for h in history if "eval_loss" in h)
    return {"recipe": recipe, "exit_code": code, "seconds": round(time.perf_counter() - started, 1),
            "evaluations": evaluations, "nvidia_smi_peak_gib": round(process_peak, 2) if process_peak else None,
            "torch_peak_allocated_gib": allocated, "torch_peak_reserved_gib": reserved,
            "fits_12gb_card": bool(process_peak and process_peak <= TWELVE_GB_USABLE_GIB)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--work_dir", type=Path, required=True)
    parser.add_argument("--recipe", action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("memory.json"))
    args = parser.parse_args(argv)
    model_dir = build_assets(args.work_dir, "nemotron", args.data_dir)
    import torch

    torch.cuda.empty_cache()  # the random model was built on the GPU here; give its memory back
    rows = []
    for recipe in args.recipe:
        name = Path(recipe).stem
        rows.append(run_recipe(recipe, model_dir, args.data_dir, args.work_dir / "runs" / name, args.work_dir / f"{name}.log"))
        print(json.dumps(rows[-1]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": date.today().isoformat(), "shape": "nemotron", "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
