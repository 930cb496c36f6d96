"""FSDP on real GPUs, end to end: SIGTERM, resume, finish, and a gathered adapter that PEFT loads.

    python -m bench.fsdp_check --data_dir data/fiqa-sample --work_dir /tmp/fsdp \\
        --config fsdp_qlora --recipe recipes/nemotron_fiqa_qlora.yaml --out fsdp_check.json

On a random-weight model with the Nemotron layer shapes (``--layers`` decoder layers; the
mechanics do not depend on depth), it does what a scheduler and a user do:

1. start the recipe under ``python -m recipes.launch`` with the FSDP launch config, a
   checkpoint and an evaluation every 2 steps, and send SIGTERM to the launcher alone once
   ``checkpoint-2`` is whole (as Kubernetes and Slurm signal the launcher);
2. rerun the very same command: it must resume from the stop checkpoint and finish;
3. load the final adapter, gathered from the FSDP shards, with PEFT onto the base model, and
   compare every LoRA tensor with the sharded checkpoint it was gathered from.

Each phase's facts (exit status, manifest status, checkpoints, resume line, max difference)
go into the JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.throughput import SHAPES, build_assets
from recipekit.rundir.checkpoints import checkpoint_problem

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def launch_command(args, model_dir: Path, output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "recipes.launch", "--config_file", f"accelerate_configs/{args.config}.yaml",
            "--num_processes", str(args.processes), "-m", "recipes.run", args.recipe,
            "--model_name_or_path", str(model_dir), "--data_dir", str(args.data_dir), "--output_dir", str(output_dir),
            "--max_steps", str(args.max_steps), "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1",
            *args.overrides]


def manifest_status(output_dir: Path) -> str | None:
    try:
        return json.loads((output_dir / "run_manifest.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def checkpoints(output_dir: Path) -> list[str]:
    return sorted((p.name for p in output_dir.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def first_run_stopped_by_sigterm(command: list[str], output_dir: Path, env: dict, log: Path) -> dict:
    started = time.perf_counter()
    with log.open("w") as handle:
        launcher = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        first = output_dir / "checkpoint-2"
        while launcher.poll() is None and not (first.is_dir() and checkpoint_problem(first) is None):
            time.sleep(0.5)
        signalled_at = time.perf_counter()
        launcher.send_signal(signal.SIGTERM)  # the launcher alone
        code = launcher.wait()
    text = log.read_text(errors="replace")
    return {"exit_code": code, "seconds_to_checkpoint_2": round(signalled_at - started, 1),
            "seconds_from_sigterm_to_exit": round(time.perf_counter() - signalled_at, 1),
            "manifest_status": manifest_status(output_dir), "checkpoints": checkpoints(output_dir),
            "stop_lines": [line for line in text.splitlines() if line.startswith("stopped:")],
            "traceback": "Traceback" in text}


def rerun(command: list[str], output_dir: Path, env: dict, log: Path) -> dict:
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    text = log.read_text(errors="replace")
    state = json.loads((output_dir / "trainer_state.json").read_text()) if (output_dir / "trainer_state.json").is_file() else {}
    return {"exit_code": code, "resume_line": next((l for l in text.splitlines() if "resuming from" in l or "starting fresh" in l), None),
            "manifest_status": manifest_status(output_dir), "final_step": state.get("global_step"),
            "best_checkpoint": state.get("best_model_checkpoint"), "traceback": "Traceback" in text}


def lora_key(name: str) -> str | None:
    """'...layers.0.self_attn.q_proj.lora_A.default.weight' and the adapter's
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> 'layers.0.self_attn.q_proj.lora_A'."""
    if "lora_" not in name:
        return None
    name = name.replace(".default", "").removesuffix(".weight")
    return name[name.index("layers."):] if "layers." in name else name


def compare_with_shards(output_dir: Path, checkpoint: Path) -> dict:
    """Every LoRA tensor of the gathered adapter against the sharded checkpoint it came from."""
    import torch
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    shards = next(checkpoint.glob("pytorch_model_fsdp_*"))
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(shards), f"{tmp}/full.pt")
        sharded = torch.load(f"{tmp}/full.pt", weights_only=False)
    sharded = sharded.get("model", sharded)
    from_shards = {lora_key(k): v for k, v in sharded.items() if lora_key(k)}
    gathered = {lora_key(k): v for k, v in load_file(output_dir / "adapter_model.safetensors").items() if lora_key(k)}
    common = sorted(set(from_shards) & set(gathered))
    diffs = [float((from_shards[k].float().cpu() - gathered[k].float().cpu()).abs().max()) for k in common]
    return {"checkpoint": checkpoint.name, "lora_tensors_gathered": len(gathered), "lora_tensors_in_shards": len(from_shards),
            "matched": len(common), "max_abs_difference": max(diffs) if diffs else None,
            "lora_B_nonzero": any(float(gathered[k].abs().max()) > 0 for k in common if k.endswith("lora_B"))}


def peft_load(output_dir: Path, model_dir: Path) -> dict:
    """Load the gathered adapter as recipes.evaluate does: PEFT onto the base model."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    model = PeftModel.from_pretrained(base, str(output_dir))
    saved = {lora_key(k): v for k, v in load_file(output_dir / "adapter_model.safetensors").items() if lora_key(k)}
    loaded = {lora_key(n): p.detach() for n, p in model.named_parameters() if lora_key(n)}
    diffs = [float((loaded[k].float().cpu() - saved[k].float().cpu()).abs().max()) for k in saved if k in loaded]
    return {"loaded_lora_tensors": len(loaded), "saved_lora_tensors": len(saved),
            "max_abs_difference_loaded_vs_saved": max(diffs) if diffs else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsdp_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--work_dir", type=Path, required=True)
    parser.add_argument("--config", default="fsdp_qlora", help="accelerate_configs/NAME.yaml")
    parser.add_argument("--recipe", default="recipes/nemotron_fiqa_qlora.yaml")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max_steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("fsdp_check.json"))
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="-- --key value ... for the recipe")
    args = parser.parse_args(argv)
    args.overrides = [o for o in args.overrides if o != "--"]

    shape = f"nemotron-{args.layers}-layers"
    SHAPES[shape] = {**SHAPES["nemotron"], "num_hidden_layers": args.layers}
    model_dir = build_assets(args.work_dir, shape, args.data_dir)
    output_dir = args.work_dir / f"run-{args.config}"
    subprocess.run(["rm", "-rf", str(output_dir)], check=True)
    env = {**os.environ, **NO_MULTICAST, "PYTHONUNBUFFERED": "1"}
    command = launch_command(args, model_dir, output_dir)
    report = {"date": date.today().isoformat(), "config": args.config, "recipe": args.recipe, "processes": args.processes,
              "shape": shape, "command": " ".join(command)}
    report["first_run"] = first_run_stopped_by_sigterm(command, output_dir, env, args.work_dir / "first.log")
    print("first run:", json.dumps(report["first_run"]), flush=True)
    report["rerun"] = rerun(command, output_dir, env, args.work_dir / "second.log")
    print("rerun:", json.dumps(report["rerun"]), flush=True)
    best = report["rerun"]["best_checkpoint"]
    source = Path(best) if best else output_dir / checkpoints(output_dir)[-1]
    if not source.is_absolute():
        source = Path.cwd() / source
    report["gathered_vs_shards"] = compare_with_shards(output_dir, source)
    report["peft_load"] = peft_load(output_dir, model_dir)
    print(json.dumps({k: report[k] for k in ("gathered_vs_shards", "peft_load")}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
