"""Do the recipes' fast paths train the same as the plain path? Per-step losses, compared and drawn.

    python -m bench.throughput --shape nemotron-4-layers --steps 22 --warmup 3 --data_dir D --out fp.json \\
        --variant "plain=recipes/nemotron_fiqa_qlora.yaml $PLAIN" \\
        --variant "liger=recipes/nemotron_fiqa_qlora.yaml $PLAIN --use_liger_kernel true" ...
    python -m bench.fast_path_report fp.json --reference plain --tolerance 0.02 --out fp_report.json --plot fp.png

Every variant trains on the same batches in the same order (same seed, no dropout): padded
batches, or packed ones when the variants pack, where the plain path's sdpa attends within each
document through transformers' block-diagonal mask. So the plain path (sdpa attention, no Liger,
no activation checkpointing, PEFT's own LoRA forward) and each fast path see identical data at
every step; only the arithmetic differs (kernel order, bf16 rounding). A fast path passes when its loss at every step is within ``--tolerance``
(relative) of the plain path's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def compare(reference: list[list[float]], other: list[list[float]]) -> dict:
    """Relative loss differences at the steps both logged."""
    ref = {int(step): loss for step, loss in reference}
    diffs = [abs(loss - ref[int(step)]) / abs(ref[int(step)]) for step, loss in other if int(step) in ref and ref[int(step)]]
    return {"steps_compared": len(diffs), "max_relative_difference": round(max(diffs), 5) if diffs else None,
            "mean_relative_difference": round(sum(diffs) / len(diffs), 5) if diffs else None}


def draw(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recipekit.runtime.atomic_io import atomic_save_figure

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for result in results:
        steps, losses = zip(*result["losses"]) if result.get("losses") else ((), ())
        axes.plot(steps, losses, marker="o", markersize=3, linewidth=1.2, label=result["name"])
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss")
    axes.set_title("fast paths against the plain path: same batches, per-step loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    atomic_save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fast_path_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="bench.throughput JSON with a reference variant and fast paths")
    parser.add_argument("--reference", default="plain")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest relative per-step loss difference")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    report = json.loads(args.results.read_text())
    results = [r for r in report["results"] if r.get("losses")]
    reference = next((r for r in results if r["name"] == args.reference), None)
    if reference is None:
        print(f"error: no variant named {args.reference!r} with losses in {args.results}", file=sys.stderr)
        return 2
    rows = []
    for result in results:
        if result is reference:
            continue
        row = {"name": result["name"], **compare(reference["losses"], result["losses"])}
        row["within_tolerance"] = row["max_relative_difference"] is not None and row["max_relative_difference"] <= args.tolerance
        rows.append(row)
        print(json.dumps(row))
    summary = {"date": report.get("date"), "shape": report.get("shape"), "reference": args.reference,
               "tolerance": args.tolerance, "source": args.results.name, "comparisons": rows,
               "losses": {r["name"]: r["losses"] for r in results}}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        draw(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
