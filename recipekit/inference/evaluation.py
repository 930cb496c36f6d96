"""Base model against base + adapter on one split: the library behind ``python -m recipes.evaluate``.

For one split of the run's data, measures both the base model and base + adapter on the
same prompts: loss and perplexity with the training format and masking (TRL's
``SFTTrainer``), then greedy answers (repetition penalty 1.2 by default) to every question scored against the reference by
semantic similarity and ROUGE-L, with the similarity gain's paired bootstrap 95% interval.
Writes ``eval_report.json``, ``eval_report.md``, ``predictions.jsonl`` and
``similarity.png`` into ``RUN_DIR/eval-SPLIT`` (or ``--out``).

The two halves are separate functions: :func:`predict` needs the model (and is what a GPU
does), :func:`score_predictions` needs only the answers (and runs anywhere, later).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from preprocess.prompt_format import detect_prompt_format
from recipekit.errors import RecipeError
from recipekit.inference.answers import (
    Answer,
    generate_answers,
)
from recipekit.inference.scoring import (
    DEFAULT_ENCODER,
    answer_lengths,
    cosines,
    embed,
    paired_bootstrap,
    resolve_encoder,
    rouge_l,
    summarise,
)
from recipekit.inference.trained_run import (
    load_adapter_model,
    load_run_recipe,
    load_run_tokenizer,
)
from recipekit.rundir.manifest import sha256_of
from recipekit.runtime.atomic_io import atomic_save_figure, atomic_write_text
from recipekit.training.data import (
    audit_truncation,
    read_split,
    records_dataset,
    split_path,
)

SIDES = ("base", "tuned")
# Decoding costs about one pass over the weights per new token whatever the batch, so the batch is
# what makes evaluation fast. By default (None, "auto" on the command line) it is as many questions
# as the GPU's free memory holds (recipekit.inference.answers.fitting_batch_size): all 648 of the FiQA test
# split on an H200, fewer on a small card, 128 on a CPU.
DEFAULT_GENERATION_BATCH_SIZE: int | None = None


def loss_and_perplexity(model, tokenizer, recipe, dataset, batch_size: int) -> dict[str, dict[str, float]]:
    """Eval loss of base and tuned model on the split, through the trainer that trained the adapter.

    Unpacked batches, whatever the recipe trained with, so every report's loss means the same.
    """
    import torch
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        config = SFTConfig(
            output_dir=scratch,
            per_device_eval_batch_size=batch_size,
            max_length=recipe.training.max_length,
            completion_only_loss=True,
            packing=False,
            eos_token=recipe.training.eos_token,
            bf16=bool(recipe.training.bf16 and on_gpu),
            use_cpu=not on_gpu,
            report_to="none",
            activation_checkpointing=False,
            dataloader_pin_memory=on_gpu,
            disable_tqdm=True,
        )
        # TRL prepares the split as if it were a train set ("Adding EOS to train dataset", ...):
        # those bars would mislabel an evaluation, so they are off while it builds its trainer.
        import datasets

        bars_were_on = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, eval_dataset=dataset,
                                 processing_class=tokenizer)
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()
        # The report prints both losses side by side; the Trainer's own dict of each pass would only repeat them.
        trainer.remove_callback(PrinterCallback)
        tuned = trainer.evaluate()["eval_loss"]
        with model.disable_adapter():
            base = trainer.evaluate()["eval_loss"]
    return {
        "base": {"eval_loss": round(base, 4), "perplexity": round(math.exp(base), 3)},
        "tuned": {"eval_loss": round(tuned, 4), "perplexity": round(math.exp(tuned), 3)},
    }


def answer_rows(records: list[dict], base: list[Answer], tuned: list[Answer]) -> list[dict]:
    """One row per question: the reference and both answers, with how each ended."""
    return [
        {"question": r["question"], "reference": r["answer"], "base": b.text, "tuned": t.text,
         "base_stopped": b.stopped, "tuned_stopped": t.stopped, "base_tokens": b.new_tokens, "tuned_tokens": t.new_tokens}
        for r, b, t in zip(records, base, tuned)
    ]


def predict(model, tokenizer, recipe, records: list[dict], dataset, max_new_tokens: int, batch_size: int,
            generation_batch_size: int | None = DEFAULT_GENERATION_BATCH_SIZE, **decoding) -> tuple[dict, list[dict]]:
    """Losses of both sides (``batch_size`` examples a forward pass) and one row per question with
    both answers (``generation_batch_size`` questions decoded together), unscored.

    ``decoding`` goes to :func:`recipekit.inference.answers.generate_answers` (repetition guards).
    """
    prompt_format = detect_prompt_format(records[0])
    losses = loss_and_perplexity(model, tokenizer, recipe, dataset, batch_size)
    questions = [r["question"] for r in records]
    tuned = generate_answers(model, tokenizer, questions, prompt_format, max_new_tokens, generation_batch_size,
                             "tuned answers", **decoding)
    with model.disable_adapter():
        base = generate_answers(model, tokenizer, questions, prompt_format, max_new_tokens, generation_batch_size,
                                "base answers", **decoding)
    return losses, answer_rows(records, base, tuned)


def score_predictions(rows: list[dict], losses: dict, encoder: str = DEFAULT_ENCODER) -> dict:
    """Add per-answer scores to ``rows`` and return both sides' summaries and the paired gain."""
    references = [r["reference"] for r in rows]
    report: dict = {"questions": len(rows)}
    # Embedded once for both sides, on the GPU when there is one (the answers are all made by now).
    reference_embeddings = embed(references, encoder, device=None)
    for side in SIDES:
        answers = [r[side] for r in rows]
        similarity = cosines(embed(answers, encoder, device=None), reference_embeddings)
        rouge = rouge_l(answers, references)
        for row, s, g in zip(rows, similarity, rouge):
            row[f"similarity_{side}"], row[f"rougeL_{side}"] = s, g
        report[side] = {
            **losses[side], "similarity": summarise(similarity), "rougeL": summarise(rouge), **answer_lengths(answers),
            "not_stopped": sum(1 for r in rows if not r.get(f"{side}_stopped", True)),
        }
    report["reference_words_mean"] = answer_lengths(references)["answer_words_mean"]
    report["similarity_gain"] = paired_bootstrap([r["similarity_base"] for r in rows],
                                                 [r["similarity_tuned"] for r in rows])
    return report


def similarity_figure(base: list[float], tuned: list[float], title: str):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(8, 4.5), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    bins = [i / 20 for i in range(-4, 21)]
    axes.hist(base, bins=bins, alpha=0.55, color="tab:gray", label=f"base (mean {sum(base) / len(base):.3f})")
    axes.hist(tuned, bins=bins, alpha=0.55, color="tab:blue", label=f"tuned (mean {sum(tuned) / len(tuned):.3f})")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of questions are whole numbers
    axes.set_xlabel("cosine similarity to the reference answer")
    axes.set_ylabel("questions")
    axes.set_title(title)
    axes.legend()
    return figure


def markdown_report(report: dict, rows: list[dict], examples: int = 3) -> str:
    base, tuned, gain = report["base"], report["tuned"], report["similarity_gain"]
    lines = [
        f"# Evaluation of `{report['run_dir']}` on {report['split']} ({report['questions']} questions)",
        "",
        f"Base model `{report['base_model']}`; encoder `{report['encoder']}`; greedy, "
        f"max_new_tokens={report['max_new_tokens']}, {report['decoding']}. Similarity gain (tuned - base): {gain['mean']:+.4f}, "
        f"paired bootstrap 95% CI [{gain['ci95'][0]:+.4f}, {gain['ci95'][1]:+.4f}].",
        "",
        f"Adapter measured: `adapter_model.safetensors`, sha256 `{report.get('adapter_sha256', 'not recorded')}`.",
        "",
        "| metric | base | tuned | change |",
        "|---|---|---|---|",
    ]
    for label, key, sub in [
        ("eval loss", "eval_loss", None), ("perplexity", "perplexity", None),
        ("similarity (mean)", "similarity", "mean"), ("similarity (median)", "similarity", "median"),
        ("ROUGE-L (mean)", "rougeL", "mean"), ("ROUGE-L (median)", "rougeL", "median"),
        ("answer length (mean words)", "answer_words_mean", None), ("empty answers", "empty_answers", None),
        ("answers under 10 words", "short_answers", None), ("answers cut at max_new_tokens", "not_stopped", None),
        ("answers repeating an 8-word run 3+ times", "looping_answers", None),
    ]:
        b = base[key][sub] if sub else base[key]
        t = tuned[key][sub] if sub else tuned[key]
        lines.append(f"| {label} | {b} | {t} | {t - b:+.4g} |")
    lines += ["", f"References: {report['reference_words_mean']} words on average.", "", "## Examples", ""]
    for row in rows[:examples]:
        lines += [
            f"**Question:** {row['question']}", "",
            f"- reference: {row['reference'][:600]}",
            f"- base (similarity {row['similarity_base']:.3f}): {row['base'][:600]}",
            f"- tuned (similarity {row['similarity_tuned']:.3f}): {row['tuned'][:600]}", "",
        ]
    return "\n".join(lines) + "\n"


def check_evaluation_records(records: list[dict], path) -> None:
    """Evaluation scores answers against the reference, so every record needs its ``question`` and
    ``answer`` text and a prompt format the project can rebuild; checked before the model loads."""
    for number, record in enumerate(records, 1):
        for key in ("question", "answer"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise RecipeError(
                    f"{path}, record {number}: no `{key}` text, which evaluation scores against. Evaluate a split "
                    "written by `python -m preprocess.fiqa` (it keeps question and answer beside the prompt)."
                )
    try:
        detect_prompt_format(records[0])
    except ValueError as exc:
        raise RecipeError(f"{path}, record 1: {exc}.") from None


def load_for_evaluation(run_dir: Path, split: str, limit: int | None):
    """The run's recipe, the split's records (checked before the model loads) as a dataset
    tokenized like training, the tokenizer and base + adapter; and what truncation cut."""
    from recipekit.training.sources import evaluation_folder

    recipe = load_run_recipe(run_dir)
    folder = evaluation_folder(recipe.recipe)
    records = read_split(folder, split)  # checks the file and names the fix if missing
    records = records[:limit] if limit else records
    check_evaluation_records(records, split_path(folder, split))  # before the model loads
    dataset = records_dataset(records, folder, split)
    tokenizer = load_run_tokenizer(run_dir)
    model = load_adapter_model(run_dir, recipe)
    dataset, truncation = audit_truncation(dataset, tokenizer, recipe.training.max_length, split, truncates=True,
                                           eos_token=recipe.training.eos_token)
    return recipe, records, dataset, tokenizer, model, truncation


def evaluate_run(run_dir: Path, split: str, limit: int | None, max_new_tokens: int, batch_size: int,
                 encoder: str, out_dir: Path | None = None,
                 generation_batch_size: int | None = DEFAULT_GENERATION_BATCH_SIZE, **decoding) -> dict:
    recipe, records, dataset, tokenizer, model, truncation = load_for_evaluation(run_dir, split, limit)
    losses, rows = predict(model, tokenizer, recipe, records, dataset, max_new_tokens, batch_size,
                           generation_batch_size, **decoding)
    report = {
        "run_dir": str(run_dir), "split": split, "prompt_format": detect_prompt_format(records[0]),
        # Which adapter was measured: a later run into the same folder replaces it.
        "adapter_sha256": sha256_of(Path(run_dir) / "adapter_model.safetensors"),
        "base_model": recipe.model.model_name_or_path, "encoder": encoder, "encoder_loaded_from": resolve_encoder(encoder),
        "max_new_tokens": max_new_tokens, "decoding": {"do_sample": False, **decoding},
        "truncation": truncation.as_dict(),
        **score_predictions(rows, losses, encoder),
    }
    out = out_dir or run_dir / f"eval-{split}"
    atomic_write_text(out / "eval_report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "eval_report.md", markdown_report(report, rows))
    atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    figure = similarity_figure([r["similarity_base"] for r in rows], [r["similarity_tuned"] for r in rows],
                               f"{recipe.name}: similarity on {split}")
    atomic_save_figure(figure, out / "similarity.png")
    report["out_dir"] = str(out)
    return report
