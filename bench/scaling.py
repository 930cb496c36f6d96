"""Multi-GPU scaling of the recipes: tokens/s, memory per GPU and loss agreement, per launch config.

    python -m bench.scaling --data_dir data/fiqa-sample --work_dir .work \\
        --case "qlora-1gpu=single_gpu:1:recipes/nemotron_fiqa_qlora.yaml --gradient_accumulation_steps 2" \\
        --case "qlora-ddp-2=multi_gpu:2:recipes/nemotron_fiqa_qlora.yaml" \\
        --case "qlora-fsdp-2=fsdp_qlora:2:recipes/nemotron_fiqa_qlora.yaml" \\
        --reference qlora-1gpu --out scaling.json
    python -m bench.scaling --report qlora.json lora.json --out all.json --plot losses.png

A case is ``NAME=CONFIG:PROCESSES:RECIPE [--key value ...]``: it runs
``accelerate launch --config_file accelerate_configs/CONFIG.yaml --num_processes PROCESSES
-m recipes.run RECIPE ...`` exactly as a user would. ``CONFIG+FLAG=VALUE`` (repeatable) adds
``--FLAG VALUE`` to ``accelerate launch``, which wins over the config file: a launch setting is
measured without a copy of the config, e.g. ``fsdp_qlora+fsdp_reshard_after_forward=false``.
Each case runs on the random-weight model that
``bench.throughput`` builds, for ``--warmup`` + ``--steps`` optimizer steps. Tokens/s is
the steady state of all processes together (non-padding tokens after the warm-up over
their step time); memory is the peak that ``nvidia-smi`` saw on each GPU during the case
(CUDA context included) and the peak rank 0 allocated through PyTorch. For the loss to be
comparable, a case should take the same examples per optimizer step as the reference: one
GPU with ``--gradient_accumulation_steps N`` against N processes with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

from bench.throughput import build_assets, measured_results, measured_run_overrides, steady_state

CONFIG_DIR = Path(__file__).resolve().parent.parent / "accelerate_configs"
# The lent multi-GPU machines must never use NVLink multicast (NVLS); keep it off in every child.
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def parse_case(text: str) -> dict:
    """``NAME=CONFIG:PROCESSES:RECIPE [--key value ...]`` as a dict."""
    name, _, rest = text.partition("=")
    head, _, overrides = rest.strip().partition(" ")
    parts = head.split(":")
    if not name or len(parts) != 3 or not parts[1].isdigit():
        raise SystemExit(f"error: case {text!r} must be NAME=CONFIG:PROCESSES:RECIPE [--key value ...], "
                         "e.g. qlora-ddp-2=multi_gpu:2:recipes/nemotron_fiqa_qlora.yaml")
    config, *flags = parts[0].split("+")
    processes, recipe = parts[1], parts[2]
    if not (CONFIG_DIR / f"{config}.yaml").is_file():
        raise SystemExit(f"error: case {name!r}: no launch config accelerate_configs/{config}.yaml")
    launch_flags = []
    for flag in flags:
        key, equals, value = flag.partition("=")
        if not key or not equals:
            raise SystemExit(f"error: case {name!r}: launch setting {flag!r} must be FLAG=VALUE, e.g. "
                             "fsdp_qlora+fsdp_reshard_after_forward=false")
        launch_flags += [f"--{key}", value]
    case = {"name": name, "config": config, "processes": int(processes), "recipe": recipe, "overrides": overrides}
    if launch_flags:
        case["launch_flags"] = launch_flags
    return case


class GpuMemorySampler:
    """Peak memory used while a case runs, read from ``nvidia-smi`` every 0.5 s: per GPU index
    (the default), or with ``per_process=True`` per process id (``--query-compute-apps``: what
    the GPU holds for that process, CUDA context included, and nothing of other processes)."""

    def __init__(self, per_process: bool = False) -> None:
        self.peaks: dict[int, float] = {}
        self.query = "--query-compute-apps=pid,used_memory" if per_process else "--query-gpu=index,memory.used"
        self.process: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> GpuMemorySampler:
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", self.query, "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            key, _, used = line.partition(",")
            try:
                index, mib = int(key), float(used)
            except ValueError:
                continue
            self.peaks[index] = max(self.peaks.get(index, 0.0), mib / 1024)

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.reader.join(timeout=5)


def case_gpus(processes: int) -> list[int]:
    """The nvidia-smi indices a case runs on: the first ``processes`` of CUDA_VISIBLE_DEVICES (or of all)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    indices = [int(i) for i in visible.split(",") if i.strip().isdigit()] if visible else list(range(64))
    return indices[:processes]


def launch_command(case: dict, model_dir: Path, data_dir: Path, output_dir: Path, max_steps: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(CONFIG_DIR / f"{case['config']}.yaml"), "--num_processes", str(case["processes"]),
            *case.get("launch_flags", []), "-m", "recipes.run", case["recipe"], *shlex.split(case["overrides"]),
            *measured_run_overrides(model_dir, data_dir, output_dir, max_steps)]


def run_case(case: dict, model_dir: Path, data_dir: Path, work: Path, log_dir: Path, warmup: int, steps: int,
             timeout: float) -> dict:
    """Launch one case, wait for it (at most ``timeout`` s), and measure it from its metrics.jsonl."""
    from plugins.loss_curves.metrics_log import read_run_rows

    output_dir = work / "runs" / case["name"]
    shutil.rmtree(output_dir, ignore_errors=True)
    log_path = log_dir / f"{case['name']}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = launch_command(case, model_dir, data_dir, output_dir, warmup + steps)
    result = {**case, "command": shlex.join(command)}
    started = time.perf_counter()
    with GpuMemorySampler() as sampler, log_path.open("w") as log:
        try:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, **NO_MULTICAST, "PYTHONUNBUFFERED": "1"})
            result["exit_code"] = done.returncode
        except subprocess.TimeoutExpired:
            result["exit_code"] = None
            result["error"] = f"stopped after the {timeout:.0f} s limit"
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    used = case_gpus(case["processes"])
    result["gpu_peak_used_gib"] = {str(k): round(v, 2) for k, v in sorted(sampler.peaks.items()) if k in used}
    if result["exit_code"] != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-4:]
        result.setdefault("error", f"exit code {result['exit_code']}: " + " | ".join(tail))
        return result
    rows = [r for r in read_run_rows(output_dir) if r.get("kind") == "train"]
    result.update(steady_state(rows, warmup))
    result["losses"] = [round(r["loss"], 5) for r in rows if "loss" in r]
    peaks = [r["peak_memory_gib"] for r in rows if r.get("peak_memory_gib") is not None]
    result["rank0_peak_allocated_gib"] = max(peaks) if peaks else None
    return result


def compare(results: list[dict], references: list[str]) -> list[dict]:
    """Scaling efficiency and largest per-step loss difference against the reference of the same recipe."""
    refs = {r["recipe"]: r for r in results if r["name"] in references and r.get("tokens_per_second")}
    for r in results:
        ref = refs.get(r["recipe"])
        if ref is None or r is ref or not r.get("tokens_per_second"):
            continue
        per_gpu_ref = ref["tokens_per_second"] / ref["processes"]
        r["scaling_efficiency"] = round(r["tokens_per_second"] / (per_gpu_ref * r["processes"]), 3)
        pairs = list(zip(ref["losses"], r["losses"]))
        if pairs:
            r["loss_max_relative_difference"] = round(max(abs(a - b) / abs(a) for a, b in pairs), 5)
            r["loss_compared_steps"] = len(pairs)
        r["reference"] = ref["name"]
        ref["is_reference"] = True
    return results


def launch_setting(result: dict) -> str:
    """The launch config as a case ran it: the file's name and any flag that overrode it."""
    return " ".join([result["config"], *result.get("launch_flags", [])])


def table(results: list[dict]) -> str:
    lines = ["| case | launch config | GPUs | tokens/s | scaling efficiency | peak memory per GPU (nvidia-smi) "
             "| loss vs reference (max difference) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['name']} | {launch_setting(r)} | {r['processes']} | failed: {r['error'][:120]} | | | |")
            continue
        peaks = ", ".join(f"{v:.1f}" for v in r["gpu_peak_used_gib"].values()) or "n/a"
        efficiency = (f"{100 * r['scaling_efficiency']:.0f}%" if "scaling_efficiency" in r
                      else "reference" if r.get("is_reference") else "-")
        loss = (f"{100 * r['loss_max_relative_difference']:.2f}% over {r['loss_compared_steps']} steps"
                if "loss_max_relative_difference" in r else "-")
        lines.append(f"| {r['name']} | {launch_setting(r)} | {r['processes']} | {r['tokens_per_second']:,.0f} | "
                     f"{efficiency} | {peaks} GiB | {loss} |")
    return "\n".join(lines)


def plot_losses(results: list[dict], path: Path) -> Path:
    """Per-step training loss of every case, one panel per recipe: the curves should lie on each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recipekit.runtime.atomic_io import atomic_save_figure

    recipes = list(dict.fromkeys(r["recipe"] for r in results if r.get("losses")))
    figure, axes = plt.subplots(1, len(recipes), figsize=(5.5 * len(recipes), 3.8), squeeze=False)
    for axis, recipe in zip(axes[0], recipes):
        for r in (r for r in results if r["recipe"] == recipe and r.get("losses")):
            axis.plot(range(1, len(r["losses"]) + 1), r["losses"], marker="o", markersize=3,
                      label=f"{r['name']} ({launch_setting(r)}, {r['processes']} GPU)")
        axis.set(title=Path(recipe).stem, xlabel="optimizer step", ylabel="training loss")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    saved = atomic_save_figure(figure, path)
    plt.close(figure)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, help="JSONL splits from preprocess.fiqa")
    parser.add_argument("--case", action="append", default=[], help="NAME=CONFIG:PROCESSES:RECIPE [--key value ...]")
    parser.add_argument("--reference", action="append", default=[],
                        help="a case that the other cases of the same recipe are compared with (repeatable)")
    parser.add_argument("--shape", default="nemotron", help="model shape from bench.throughput.SHAPES")
    parser.add_argument("--steps", type=int, default=8, help="measured steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300, help="seconds one case may run")
    parser.add_argument("--work_dir", type=Path, default=Path(".work"), help="model, runs and logs (reused)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default scaling.json; with --report: "
                        "the merged results, only if given)")
    parser.add_argument("--plot", type=Path, default=None, help="with --report: a PNG of every case's loss per step")
    parser.add_argument("--log_dir", type=Path, default=None, help="each case's output (default: WORK_DIR/logs)")
    parser.add_argument("--report", nargs="+", type=Path, help="print one table from these result files and stop")
    parser.add_argument("--resume", action="store_true",
                        help="keep the cases already measured in --out without an error and run the others: one "
                             "invocation (one results file) finished over several calls of a machine lent a few "
                             "minutes at a time")
    args = parser.parse_args(argv)

    if args.report:
        reports = [json.loads(p.read_text()) for p in args.report]
        results = [r for report in reports for r in report["results"]]
        references = args.reference or [name for report in reports for name in report.get("references", [])]
        print(table(compare(results, references)))
        if args.out:
            merged = {**reports[0], "references": references, "results": results}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(merged, indent=2) + "\n")
        if args.plot:
            print(f"loss curves: {plot_losses(results, args.plot)}")
        return 0
    if not args.data_dir or not args.case:
        parser.error("--data_dir and at least one --case are needed (or --report FILES)")
    cases = [parse_case(text) for text in args.case]
    args.out = args.out or Path("scaling.json")
    started = time.perf_counter()
    model_dir = build_assets(args.work_dir, args.shape, args.data_dir)
    print(f"random {args.shape} model in {model_dir} ({time.perf_counter() - started:.0f}s)", flush=True)
    results = measured_results(args.out) if args.resume else []
    measured = {r["name"] for r in results}
    for case in cases:
        if case["name"] in measured:
            print(f"{case['name']}: measured in {args.out}, kept", flush=True)
            continue
        results.append(run_case(case, model_dir, args.data_dir, args.work_dir, args.log_dir or args.work_dir / "logs",
                                args.warmup, args.steps, args.timeout))
        compare(results, args.reference)
        shown = {k: v for k, v in results[-1].items() if k not in ("command", "losses")}
        print(f"{case['name']}: {json.dumps(shown)}", flush=True)
        report = {"date": date.today().isoformat(), "shape": args.shape, "steps": args.steps, "warmup": args.warmup,
                  "references": args.reference, "results": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every case: a cut-off run keeps its numbers
    print(table(results))
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
