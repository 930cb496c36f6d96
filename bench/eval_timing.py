"""How long ``recipes.evaluate`` takes on the full FiQA test split (648 questions), worst case.

Stage 1, on the GPU: a run of each recipe (2 optimizer steps) on random weights of the exact
Nemotron-Nano-8B shape, then the model-bound half of ``recipes.evaluate`` timed phase by
phase: loading base + adapter, the loss of both, and greedy answers of both, up to
``--max_new_tokens``. Random weights never emit EOS, so every answer runs the full length:
the worst case. The 648 questions are the data's own questions (test, validation, train),
cycled to the test split's size, so prompt lengths are FiQA's.

    python -m bench.eval_timing predict --data_dir data/fiqa-sample --work_dir /tmp/ev \\
        --recipe recipes/nemotron_fiqa_qlora.yaml --out eval_timing.json

Stage 2, anywhere (the encoder need not be on the GPU machine): the scoring half on the
saved answers, timed, added to the same file.

    python -m bench.eval_timing score --timing eval_timing.json --predictions_dir DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

from recipekit.runtime.atomic_io import atomic_write_text

FIQA_TEST_QUESTIONS = 648


def write_timing_data(source: Path, target: Path, questions: int) -> Path:
    """``source``'s train and validation splits as they are, and a test split of ``questions``
    records cycled from all of its questions."""
    target.mkdir(parents=True, exist_ok=True)
    pool = []
    for split in ("test", "validation", "train"):
        lines = (source / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        pool += [line for line in lines if line.strip()]
        if split != "test":
            (target / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    test = list(itertools.islice(itertools.cycle(pool), questions))
    (target / "test.jsonl").write_text("\n".join(test) + "\n", encoding="utf-8")
    for extra in ("manifest.json",):
        if (source / extra).is_file():
            (target / extra).write_text((source / extra).read_text(encoding="utf-8"), encoding="utf-8")
    return target


def train_short_run(recipe: str, model_dir: Path, data_dir: Path, output_dir: Path) -> None:
    from bench.throughput import measured_run_overrides

    command = [sys.executable, "-m", "recipes.run", recipe,
               *measured_run_overrides(model_dir, data_dir, output_dir, max_steps=2)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: training {recipe} for the timing failed:\n{done.stderr[-3000:]}")


def timed_predict(run_dir: Path, max_new_tokens: int, batch_size: int, generation_batch_size: int | None,
                  repetition_penalty: float) -> tuple[dict, list[dict], dict]:
    """The model-bound half of ``recipes.evaluate`` (the same functions), with a clock per phase."""
    import gc

    import torch

    from preprocess.prompt_format import detect_prompt_format
    from recipekit.inference.answers import generate_answers
    from recipekit.inference.evaluation import (
        answer_rows,
        load_for_evaluation,
        loss_and_perplexity,
    )

    gc.collect()  # the previous timing's model, if any, gives its memory back first
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock = {}
    started = time.perf_counter()
    recipe, records, dataset, tokenizer, model, _ = load_for_evaluation(run_dir, "test", None)
    clock["load_seconds"] = round(time.perf_counter() - started, 1)
    mark = time.perf_counter()
    losses = loss_and_perplexity(model, tokenizer, recipe, dataset, batch_size)
    clock["loss_seconds"] = round(time.perf_counter() - mark, 1)
    questions, prompt_format = [r["question"] for r in records], detect_prompt_format(records[0])
    answers = {}
    if generation_batch_size is None:  # what generate_answers will choose, from the same inputs
        from recipekit.inference.answers import auto_batch_size

        clock["auto_generation_batch_size"] = auto_batch_size(model, tokenizer, questions, prompt_format, max_new_tokens)
    for side, adapter in (("tuned", nullcontext()), ("base", model.disable_adapter())):  # as predict() does
        mark = time.perf_counter()
        with adapter:
            answers[side] = generate_answers(model, tokenizer, questions, prompt_format, max_new_tokens,
                                             generation_batch_size, progress=False,
                                             repetition_penalty=repetition_penalty)
        clock[f"{side}_answers_seconds"] = round(time.perf_counter() - mark, 1)
    clock["model_bound_seconds"] = round(time.perf_counter() - started, 1)
    new_tokens = sum(a.new_tokens for side in answers.values() for a in side)
    clock["new_tokens"] = new_tokens
    clock["answers_not_stopped"] = sum(1 for side in answers.values() for a in side if not a.stopped)
    if torch.cuda.is_available():
        clock["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        clock["gpu"] = torch.cuda.get_device_name(0)
    return losses, answer_rows(records, answers["base"], answers["tuned"]), clock


def predict_stage(args) -> int:
    from bench.throughput import build_assets

    model_dir = build_assets(args.work_dir, args.shape, args.data_dir)
    data = write_timing_data(args.data_dir, args.work_dir / "timing-data", args.questions)
    results = []
    for recipe in args.recipe:
        name = Path(recipe).stem
        run_dir = args.work_dir / "runs" / name
        train_short_run(recipe, model_dir, data, run_dir)
        for size in args.generation_batch_size:
            losses, rows, clock = timed_predict(run_dir, args.max_new_tokens, args.batch_size, size,
                                                args.repetition_penalty)
            predictions = args.out.with_name(f"{args.out.stem}.{name}.bs{size or 'auto'}.predictions.jsonl")
            atomic_write_text(predictions, "".join(json.dumps(r) + "\n" for r in rows))
            results.append({"recipe": recipe, "questions": len(rows), "max_new_tokens": args.max_new_tokens,
                            "loss_batch_size": args.batch_size, "generation_batch_size": size or "auto", "losses": losses,
                            **clock, "predictions": predictions.name})
            print(json.dumps(results[-1]), flush=True)
            atomic_write_text(args.out, json.dumps({
                "date": date.today().isoformat(), "shape": args.shape,
                "questions_from": f"{args.data_dir}: its test, validation and train questions cycled to {args.questions}",
                "results": results}, indent=2) + "\n")
    return 0


def score_stage(args) -> int:
    from bench.quality import hardware
    from recipekit.inference.evaluation import score_predictions

    timing = json.loads(args.timing.read_text())
    for result in timing["results"]:
        rows = [json.loads(line) for line in (args.predictions_dir / result["predictions"]).read_text().splitlines()]
        started = time.perf_counter()
        score_predictions(rows, result["losses"])
        result["scoring_seconds"] = round(time.perf_counter() - started, 1)
        result["scoring_hardware"] = hardware()
        result["total_seconds"] = round(result["model_bound_seconds"] + result["scoring_seconds"], 1)
        print(json.dumps({k: result[k] for k in ("recipe", "generation_batch_size", "model_bound_seconds",
                                                  "scoring_seconds", "total_seconds")}), flush=True)
    atomic_write_text(args.timing, json.dumps(timing, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_timing", description=__doc__.split("\n\n")[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    predict = stages.add_parser("predict", help="GPU: train briefly, then time the model-bound half")
    predict.add_argument("--data_dir", type=Path, required=True)
    predict.add_argument("--work_dir", type=Path, required=True)
    predict.add_argument("--recipe", action="append", required=True)
    predict.add_argument("--shape", default="nemotron")
    predict.add_argument("--questions", type=int, default=FIQA_TEST_QUESTIONS)
    predict.add_argument("--max_new_tokens", type=int, default=256)
    predict.add_argument("--batch_size", type=int, default=8, help="loss pass, as recipes.evaluate's default")
    from recipes.evaluate import generation_batch_size_value

    predict.add_argument("--generation_batch_size", type=generation_batch_size_value, action="append",
                         default=None, help="questions a batch, or auto (recipes.evaluate's default); repeat to compare")
    predict.add_argument("--repetition_penalty", type=float, default=1.2)
    predict.add_argument("--out", type=Path, default=Path("eval_timing.json"))
    score = stages.add_parser("score", help="anywhere: time the scoring of the saved answers")
    score.add_argument("--timing", type=Path, required=True)
    score.add_argument("--predictions_dir", type=Path, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.stage == "predict":
        from recipekit.inference.evaluation import DEFAULT_GENERATION_BATCH_SIZE

        args.generation_batch_size = args.generation_batch_size or [DEFAULT_GENERATION_BATCH_SIZE]
        return predict_stage(args)
    return score_stage(args)


if __name__ == "__main__":
    sys.exit(main())
