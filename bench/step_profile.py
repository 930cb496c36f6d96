"""Where one training step's GPU time goes: a torch.profiler trace of one step, by kernel kind.

    python -m bench.step_profile --data_dir data/fiqa-sample --work_dir /tmp/tp_work \\
        --variant nemotron_fiqa_qlora=recipes/nemotron_fiqa_qlora.yaml --out profile.json

Each variant (``NAME=RECIPE [--key value ...]``, as in ``bench.throughput``) trains on the
random-weight model of ``--shape`` through the path of ``recipes.run``, and step
``--profile_step`` (after warm-up) runs under the profiler. The CUDA kernels of that step are
summed by kind (matrix multiplies, attention, 4-bit dequantisation, Liger's fused kernels,
elementwise work, the optimizer ...), next to the step's wall time; what the kernels leave of
the wall time is the GPU waiting on the CPU (launch overhead, Python, synchronisation), and the
gaps between kernels are sorted by length, the longest named by the kernels around them. The
traced span starts where the step before ended, so loading the step's batch is in it. The 25
longest kernels are kept by name, so every bucket can be checked.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

from bench.throughput import (
    RESULT_PREFIX,
    SHAPES,
    build_assets,
    logged_tokens,
    measured_run_overrides,
    parse_variant,
    run_worker,
)

# First match wins; names are matched lower-cased. Checked against H200 traces of the recipes.
KERNEL_KINDS: list[tuple[str, str]] = [
    ("4-bit dequantisation", r"dequant|nf4|kdequant"),
    ("attention", r"flex|triton_tem_fused|attention|fmha|flash|sdpa"),
    ("optimizer", r"multi_tensor|adam|foreach"),
    ("matrix multiply", r"gemm|cutlass|xmma|nvjet|cublas|wgmma|splitk|gemv"),
    ("Liger / Triton fused", r"liger|rms_norm|swiglu|rope|_triton|triton_"),
    ("dropout", r"dropout|bernoulli|fused_dropout"),
    ("copies and casts", r"copy|memcpy|memset|cast|to_copy|cat_|index|gather|scatter"),
    ("reductions", r"reduce|sum_|norm|softmax|max_|argmax"),
]
OTHER_KIND = "elementwise and other"


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, pattern in KERNEL_KINDS if re.search(pattern, lowered)), OTHER_KIND)


def summarise_kernels(kernels: list[tuple[str, float]], step_seconds: float, top: int = 25) -> dict:
    """``kernels``: (name, microseconds) per launch. Totals by kind, share of the step, the longest names."""
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for name, micros in kernels:
        by_kind[kernel_kind(name)] += micros
        by_name[name][0] += micros
        by_name[name][1] += 1
    kernel_seconds = sum(by_kind.values()) / 1e6
    step_ms = step_seconds * 1e3
    kinds = {kind: {"ms": round(micros / 1e3, 2), "share_of_step": round(micros / 1e3 / step_ms, 4)}
             for kind, micros in sorted(by_kind.items(), key=lambda item: -item[1])}
    longest = sorted(by_name.items(), key=lambda item: -item[1][0])[:top]
    return {
        "step_ms": round(step_ms, 2),
        "kernel_ms": round(kernel_seconds * 1e3, 2),
        "gpu_idle_ms": round(max(0.0, step_ms - kernel_seconds * 1e3), 2),
        "kernel_launches": len(kernels),
        "by_kind": kinds,
        "longest_kernels": [{"name": name[:160], "kind": kernel_kind(name), "ms": round(micros / 1e3, 2), "launches": n}
                            for name, (micros, n) in longest],
    }


GAP_BUCKETS_MS: list[tuple[str, float]] = [("1 ms or more", 1.0), ("0.1 to 1 ms", 0.1), ("under 0.1 ms", 0.0)]


def idle_gaps(spans: list[tuple[str, float, float]], top: int = 10) -> dict:
    """Where the GPU waits between kernels. ``spans``: (name, start, end) in microseconds.

    A few long gaps are the CPU blocked on something (a synchronisation, batch loading); many
    short ones are the CPU launching kernels more slowly than the GPU runs them. Kernels that
    overlap (a copy on another stream) are merged, so a gap is time with no kernel running."""
    ordered = sorted(spans, key=lambda span: span[1])
    buckets = {label: {"count": 0, "ms": 0.0} for label, _ in GAP_BUCKETS_MS}
    largest: list[dict] = []
    if not ordered:
        return {"between_kernels": buckets, "largest": largest}
    previous_name, busy_until = ordered[0][0], ordered[0][2]
    for name, start, end in ordered[1:]:
        gap_ms = (start - busy_until) / 1e3
        if gap_ms > 0:
            label = next(label for label, floor in GAP_BUCKETS_MS if gap_ms >= floor)
            buckets[label]["count"] += 1
            buckets[label]["ms"] += gap_ms
            largest.append({"ms": round(gap_ms, 3), "after": previous_name[:100], "before": name[:100]})
        if end >= busy_until:
            previous_name, busy_until = name, end
    for bucket in buckets.values():
        bucket["ms"] = round(bucket["ms"], 2)
    return {"between_kernels": buckets, "largest": sorted(largest, key=lambda gap: -gap["ms"])[:top]}


def profile_callback(step: int):
    """A TrainerCallback that runs optimizer step ``step`` (1-based) under torch.profiler."""
    import torch
    from transformers import TrainerCallback

    class ProfileOneStep(TrainerCallback):
        """Traces from the end of the step before (after its log) to the end of ``step``: the
        span the throughput plugin times, so loading the batch is in the trace."""

        def __init__(self) -> None:
            self.profiler = None
            self.started = 0.0
            self.result: dict | None = None

        def _start(self) -> None:
            # GPU kernels only: tracing every CPU op would slow the step it measures.
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                activities = [torch.profiler.ProfilerActivity.CUDA]
            else:
                activities = [torch.profiler.ProfilerActivity.CPU]
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.profiler is None and state.global_step + 1 == step:
                self._start()

        def on_step_begin(self, args, state, control, **kwargs):
            if self.profiler is None and state.global_step + 1 == step:
                self._start()  # no log ended the step before (the first step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.profiler is None or self.result is not None:
                return
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            seconds = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)
            device_events = [e for e in self.profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            self.result = summarise_kernels([(e.name, e.device_time) for e in device_events], seconds)
            gaps = idle_gaps([(e.name, e.time_range.start, e.time_range.end) for e in device_events])
            between = sum(bucket["ms"] for bucket in gaps["between_kernels"].values())
            gaps["before_first_and_after_last_kernel_ms"] = round(max(0.0, self.result["gpu_idle_ms"] - between), 2)
            self.result["idle_gaps"] = gaps

    return ProfileOneStep()


def worker(spec: dict) -> dict:
    from recipekit.config.parse import parse_recipe
    from recipekit.training.trainer import build_trainer

    argv = [spec["recipe"], *shlex.split(spec.get("overrides", "")),
            *measured_run_overrides(spec["model_dir"], spec["data_dir"], spec["output_dir"], spec["profile_step"])]
    recipe = parse_recipe(argv)
    callback = profile_callback(spec["profile_step"])
    trainer, _ = build_trainer(recipe, [callback])
    trainer.train()
    seen = {h["step"]: tokens for h in trainer.state.log_history  # per-step logs, not the closing summary
            if "loss" in h and (tokens := logged_tokens(h)) is not None}
    step = spec["profile_step"]
    step_tokens = int(seen[step] - seen.get(step - 1, 0)) if step in seen else None
    return {"name": spec["name"], "profile_step": spec["profile_step"], "step_tokens": step_tokens,
            **(callback.result or {"error": "the profiled step did not run"})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], help="NAME=RECIPE [--key value ...]")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="nemotron")
    parser.add_argument("--profile_step", type=int, default=4, help="the optimizer step profiled (after warm-up)")
    parser.add_argument("--work_dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("step_profile.json"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    model_dir = build_assets(args.work_dir, args.shape, args.data_dir)
    results = []
    for text in args.variant:
        spec = {**parse_variant(text), "model_dir": str(model_dir), "data_dir": str(args.data_dir),
                "output_dir": str(args.work_dir / "profile-runs" / text.split("=")[0]), "shape": args.shape,
                "profile_step": args.profile_step}
        if spec["kind"] != "recipe":
            raise SystemExit(f"error: {text!r}: step_profile takes NAME=RECIPE.yaml variants only")
        result, _ = run_worker([sys.executable, "-m", "bench.step_profile", "--data_dir", str(args.data_dir),
                                "--work_dir", str(args.work_dir), "--worker", json.dumps(spec)], spec)
        results.append(result)
        print(json.dumps({k: v for k, v in results[-1].items() if k != "longest_kernels"}), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"date": date.today().isoformat(), "shape": args.shape, "results": results},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
