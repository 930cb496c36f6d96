"""Loss masking through the real SFTTrainer path, on a real (offline-built) BPE tokenizer.

Prompt tokens must be -100; every answer token and the closing EOS must be supervised,
padded or packed. Examples that truncation leaves with no answer token are counted.
"""

from __future__ import annotations

import json

import pytest

from recipekit.config.parse import parse_recipe
from recipekit.training.trainer import build_trainer

SMOKE = "recipes/smoke.yaml"


def make_recipe(tmp_path, model_dir, data_dir, *extra: str):
    from tests.conftest import REPO_ROOT

    return parse_recipe(
        [
            str(REPO_ROOT / SMOKE),
            "--model_name_or_path", str(model_dir),
            "--data_dir", str(data_dir),
            "--build_smoke_assets", "false",
            "--output_dir", str(tmp_path / "run"),
            "--shuffle_dataset", "false",
            *extra,
        ]
    )


def source_records(data_dir, split="train"):
    return [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]


def supervised_segments(tokenizer, input_ids, labels):
    """Prompt length and the supervised token ids of one unpacked sequence."""
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:first])
    return first, [t for t, label in zip(input_ids, labels) if label != -100]


def test_prompt_masked_answer_and_eos_supervised(tmp_path, tiny_model_dir, tiny_tokenizer, fiqa_jsonl_dir):
    trainer, _ = build_trainer(make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--max_length", "2048"))
    records = source_records(fiqa_jsonl_dir)
    assert len(trainer.train_dataset) == len(records)
    eos = tiny_tokenizer.eos_token_id
    for row, record in zip(trainer.train_dataset, records):
        input_ids, labels = row["input_ids"], row["labels"]
        prompt_len, supervised = supervised_segments(tiny_tokenizer, input_ids, labels)
        assert prompt_len == len(tiny_tokenizer(record["prompt"])["input_ids"])
        assert labels[prompt_len:] == input_ids[prompt_len:]  # every answer token counts
        assert supervised[-1] == eos and input_ids[-1] == eos  # the closing EOS counts
        assert tiny_tokenizer.decode(supervised) == record["completion"] + tiny_tokenizer.eos_token


def test_padding_is_masked_but_eos_is_not(tmp_path, tiny_model_dir, tiny_tokenizer, fiqa_jsonl_dir):
    trainer, _ = build_trainer(make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir))
    rows = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(rows)
    pad, eos = tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id
    assert pad != eos
    for row, ids, labels in zip(rows, batch["input_ids"].tolist(), batch["labels"].tolist()):
        n = len(row["input_ids"])
        assert ids[:n] == row["input_ids"] and all(t == pad for t in ids[n:])
        assert all(label == -100 for label in labels[n:])  # padding never counts
        assert labels[n - 1] == eos  # the answer's EOS does


def test_packed_documents_keep_their_masks(tmp_path, tiny_model_dir, tiny_tokenizer, fiqa_jsonl_dir):
    recipe = make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--packing", "true", "--max_length", "1024")
    trainer, _ = build_trainer(recipe)
    records = {r["completion"] + tiny_tokenizer.eos_token: r for r in source_records(fiqa_jsonl_dir)}
    eos = tiny_tokenizer.eos_token_id
    seen = 0
    for row in trainer.train_dataset:
        start = 0
        for length in row["seq_lengths"]:
            ids, labels = row["input_ids"][start : start + length], row["labels"][start : start + length]
            start += length
            prompt_len, supervised = supervised_segments(tiny_tokenizer, ids, labels)
            completion = tiny_tokenizer.decode(supervised)
            assert completion in records, "each packed document supervises exactly one whole answer + EOS"
            assert prompt_len == len(tiny_tokenizer(records[completion]["prompt"])["input_ids"])
            assert supervised[-1] == eos
            seen += 1
    assert seen == len(records)

    batch = trainer.data_collator([trainer.train_dataset[0]])
    positions = batch["position_ids"][0].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0]
    lengths = trainer.train_dataset[0]["seq_lengths"]
    assert starts == [sum(lengths[:k]) for k in range(len(lengths))]  # positions restart per document
    assert "attention_mask" not in batch or batch["attention_mask"].all()  # padding-free


def test_truncation_without_answer_tokens_is_counted_and_left_out(tmp_path, tiny_model_dir, tiny_tokenizer, fiqa_jsonl_dir):
    records = source_records(fiqa_jsonl_dir)
    prompt_lengths = [len(tiny_tokenizer(r["prompt"])["input_ids"]) for r in records]
    limit = max(prompt_lengths)  # the longest prompts alone fill it
    expected_left_out = sum(p >= limit for p in prompt_lengths)
    assert 0 < expected_left_out < len(records) / 2

    trainer, data = build_trainer(make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--max_length", str(limit)))
    train_report = next(r for r in data.reports if r.split == "train")
    assert train_report.left_out == expected_left_out
    assert train_report.answers_cut == len(records) - expected_left_out
    assert len(trainer.train_dataset) == len(records) - expected_left_out
    assert f"{expected_left_out} keep no answer token and are left out" in train_report.describe()
    for row in trainer.train_dataset:
        assert len(row["input_ids"]) <= limit and any(label != -100 for label in row["labels"])


def test_max_length_too_short_for_most_prompts_is_refused(tmp_path, tiny_model_dir, tiny_tokenizer, fiqa_jsonl_dir):
    from recipekit.errors import RecipeError

    records = source_records(fiqa_jsonl_dir)
    shortest_prompt = min(len(tiny_tokenizer(r["prompt"])["input_ids"]) for r in records)
    recipe = make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--max_length", str(shortest_prompt))
    with pytest.raises(RecipeError, match=r"`max_length` \d+ is too short for the prompts: 38 of 38 train examples"):
        build_trainer(recipe)


def test_chat_format_masks_everything_before_the_assistant_turn(tmp_path, tiny_model_dir, tiny_tokenizer, fiqa_csv_dir):
    from preprocess.fiqa import preprocess

    data = tmp_path / "chat-data"
    preprocess(data, source_dir=fiqa_csv_dir, prompt_format="chat")
    trainer, _ = build_trainer(make_recipe(tmp_path, tiny_model_dir, data, "--max_length", "2048"))
    record = source_records(data)[0]
    row = trainer.train_dataset[0]
    prompt_ids = tiny_tokenizer.apply_chat_template(record["prompt"], add_generation_prompt=True, tokenize=True)
    prompt_ids = prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids
    prompt_len, supervised = supervised_segments(tiny_tokenizer, row["input_ids"], row["labels"])
    assert prompt_len == len(prompt_ids)
    assert tiny_tokenizer.decode(supervised) == record["answer"] + tiny_tokenizer.eos_token


@pytest.mark.parametrize("pad_token", [None, "<|eot_id|>"])
def test_pad_equal_to_eos_is_refused(tmp_path, tiny_model_dir, fiqa_jsonl_dir, pad_token):
    from transformers import AutoTokenizer

    from recipekit.config.parse import RecipeError
    from recipekit.training.model import load_tokenizer

    model_dir = tmp_path / "no-pad"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(model_dir)
    extra = ["--pad_token", pad_token] if pad_token else []
    recipe = make_recipe(tmp_path, model_dir, fiqa_jsonl_dir, *extra)
    if pad_token is None:
        recipe.training.pad_token = None
    with pytest.raises(RecipeError, match="no pad token distinct from EOS.*<\\|finetune_right_pad_id\\|>"):
        load_tokenizer(recipe.model, recipe.training)


@pytest.mark.parametrize(("prompt_format", "eos_token"), [("completion", None), ("completion", "<|start_header_id|>"),
                                                          ("chat", None)])
def test_the_pre_load_audit_tokenizes_exactly_as_the_trainer(tmp_path, tiny_model_dir, fiqa_csv_dir, prompt_format,
                                                              eos_token):
    """recipekit.training.data.token_spans repeats TRL's tokenization before the model loads; the trainer's own
    tokenized dataset must give the same prompt and total lengths, so a change in TRL fails here."""
    from preprocess.fiqa import preprocess
    from recipekit.training.data import load_split, tokenize_like_trl
    from recipekit.training.model import load_tokenizer

    data = tmp_path / "data"
    preprocess(data, source_dir=fiqa_csv_dir, prompt_format=prompt_format)
    extra = ["--max_length", "4096"] + (["--eos_token", eos_token] if eos_token else [])
    recipe = make_recipe(tmp_path, tiny_model_dir, data, *extra)
    tokenizer = load_tokenizer(recipe.model, recipe.training)
    eos = recipe.training.eos_token or tokenizer.eos_token
    expected = [tokenize_like_trl(example, tokenizer, eos) for example in load_split(data, "train")]
    trainer, _ = build_trainer(recipe)
    from_trainer = [(next(i for i, label in enumerate(row["labels"]) if label != -100), list(row["input_ids"]))
                    for row in trainer.train_dataset]
    assert from_trainer == expected and len(expected) > 10
