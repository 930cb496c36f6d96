"""Check, on a real tokenizer and real data, that training sees what generation will ask.

    python -m bench.masking_audit recipes/smollm2_fiqa.yaml --model_name_or_path runs/smollm2-135m-instruct \\
        --data_dir data/fiqa-sample [--key value ...]

Builds the recipe's ``SFTTrainer`` exactly as ``recipes.run`` does (no training) and reads
the tokenized training examples TRL made, then counts, over every example:

- where the supervised tokens begin: is the unsupervised part exactly the prompt that
  ``recipekit.inference.answers`` sends at inference (same tokens, special tokens included)?
- how each example ends: is the EOS that generation stops on supervised at its end,
  and is the pad token (distinct from EOS) never supervised?
- truncation: how many examples lose their end (and so their EOS) to ``max_length``;
- packing: in a collated batch, do position ids restart at 0 for every document, and is
  the first token of each document unsupervised (no loss across document boundaries)?

Prints a JSON report; any count that is not what it should be is a defect to fix.
"""

from __future__ import annotations

import json
import sys


def audit(argv: list[str]) -> dict:
    from preprocess.prompt_format import detect_prompt_format
    from recipekit.config.parse import parse_recipe
    from recipekit.inference.answers import adds_special_tokens, prompt_text
    from recipekit.training.data import split_path
    from recipekit.training.trainer import build_trainer

    recipe = parse_recipe(argv)
    trainer, _ = build_trainer(recipe)
    tokenizer = trainer.processing_class
    records = [json.loads(line) for line in split_path(recipe.recipe.data_dir, recipe.recipe.train_split).open()]
    prompt_format = detect_prompt_format(records[0])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    dataset = trainer.train_dataset
    packed = bool(recipe.training.packing)
    counts = {"examples": len(records), "prompt_format": prompt_format, "eos_token": tokenizer.eos_token,
              "pad_token": tokenizer.pad_token, "pad_is_eos": pad == eos, "packed": packed}
    if packed:
        counts.update(packed_batch_checks(trainer, eos))
        return counts
    if len(dataset) != len(records):
        raise SystemExit(f"error: {len(records) - len(dataset)} examples were left out; the audit needs them all.")
    prompt_matches = eos_supervised = truncated = pad_supervised = 0
    for row, record in zip(dataset, records):
        ids, labels = row["input_ids"], row["labels"]
        first = next(i for i, label in enumerate(labels) if label != -100)
        wanted = tokenizer(prompt_text(record["question"], prompt_format, tokenizer),
                           add_special_tokens=adds_special_tokens(prompt_format))["input_ids"]
        prompt_matches += ids[:first] == wanted
        supervised = [label for label in labels if label != -100]
        eos_supervised += eos in supervised[-2:]  # chat templates may close the turn with a newline after EOS
        truncated += len(ids) >= (recipe.training.max_length or 10**9)
        pad_supervised += pad in supervised
    counts.update({"training_examples": len(dataset), "prompt_equals_generation_prompt": prompt_matches,
                   "eos_supervised_at_the_end": eos_supervised, "truncated_at_max_length": truncated,
                   "examples_with_pad_supervised": pad_supervised})
    return counts


def packed_batch_checks(trainer, eos: int) -> dict:
    """Collate every pack as training does and check its document boundaries and EOS."""
    documents = starts_unsupervised = eos_supervised = 0
    for index in range(len(trainer.train_dataset)):
        batch = trainer.data_collator([trainer.train_dataset[index]])
        positions, labels = batch["position_ids"][0].tolist(), batch["labels"][0].tolist()
        starts = [i for i, p in enumerate(positions) if p == 0]
        ends = [s - 1 for s in starts[1:]] + [len(labels) - 1]
        documents += len(starts)
        starts_unsupervised += sum(labels[s] == -100 for s in starts)
        eos_supervised += sum(eos in labels[max(s, e - 1) : e + 1] for s, e in zip(starts, ends))
    return {"packs": len(trainer.train_dataset), "documents": documents,
            "documents_starting_unsupervised": starts_unsupervised,
            "documents_with_supervised_eos_at_the_end": eos_supervised}


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(audit(sys.argv[1:] if argv is None else argv), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
