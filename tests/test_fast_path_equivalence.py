"""The fast path trains the same thing: packed, padding-free batches (sdpa or flex attention)
give the same per-token loss as the plain padded path, on the same examples, with a trained
(non-zero) adapter, through the trainer's own loss."""

from __future__ import annotations

import pytest
import torch

from recipekit.training.trainer import build_trainer
from tests.test_masking import make_recipe


def total_nll(trainer, rows) -> tuple[float, int]:
    """Sum of per-token losses over supervised tokens, and their count, for rows fed as one batch each."""
    model = trainer.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            batch = trainer.data_collator([row])
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            labels = batch["labels"]
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            if "position_ids" in batch:  # packed: the token after a document's end starts the next one
                starts = batch["position_ids"][:, 1:] == 0
                shift_labels = shift_labels.masked_fill(starts, -100)
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                ignore_index=-100, reduction="sum",
            )
            total += loss.item()
            count += int((shift_labels != -100).sum())
    return total, count


def trainer_token_mean(trainer, rows, batch_size: int) -> tuple[float, int, bool]:
    """The trainer's own loss (``compute_loss``, a per-token mean per batch) averaged over every
    supervised token of ``rows``; also whether any batch held padding."""
    model = trainer.model.eval()
    total, count, padded = 0.0, 0, False
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = trainer.data_collator(rows[start : start + batch_size])
            padded = padded or bool((batch.get("attention_mask", torch.ones(1)) == 0).any())
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            total += trainer.compute_loss(model, batch).item() * tokens
            count += tokens
    return total / count, count, padded


def trained_adapter(trainer) -> None:
    """LoRA B starts at zero, where the adapter changes nothing; give it weights, as training does."""
    generator = torch.Generator().manual_seed(0)
    for name, parameter in trainer.model.named_parameters():
        if "lora_B" in name:
            parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
def test_packed_loss_equals_padded_loss(tmp_path, tiny_model_dir, fiqa_jsonl_dir, attention):
    common = ["--max_length", "1024", "--per_device_train_batch_size", "1"]
    plain, _ = build_trainer(
        make_recipe(tmp_path / "plain", tiny_model_dir, fiqa_jsonl_dir, *common, "--packing", "false")
    )
    packed, _ = build_trainer(
        make_recipe(tmp_path / "packed", tiny_model_dir, fiqa_jsonl_dir, *common, "--packing", "true",
                    "--attn_implementation", attention)
    )
    trained_adapter(plain)
    packed.model.load_state_dict(plain.model.state_dict())  # the same (non-zero) adapter on both
    plain_total, plain_tokens = total_nll(plain, list(plain.train_dataset))
    packed_total, packed_tokens = total_nll(packed, list(packed.train_dataset))
    assert packed_tokens == plain_tokens  # the same supervised tokens: masking unchanged by packing
    assert packed_total / packed_tokens == pytest.approx(plain_total / plain_tokens, rel=1e-4)

    # The trainer's own loss: padded batches of 4 (real padding) against packs, per supervised token.
    padded_mean, padded_tokens, had_padding = trainer_token_mean(plain, list(plain.train_dataset), batch_size=4)
    packed_mean, packed_count, _ = trainer_token_mean(packed, list(packed.train_dataset), batch_size=1)
    assert had_padding and padded_tokens == packed_count == plain_tokens
    assert packed_mean == pytest.approx(padded_mean, rel=1e-4)
    assert padded_mean == pytest.approx(plain_total / plain_tokens, rel=1e-4)

    # And the trainer's own loss on one packed batch is that batch's mean per-token loss.
    batch = packed.data_collator([packed.train_dataset[0]])
    with torch.no_grad():
        trainer_loss = packed.model(**batch).loss.item()
    manual_total, manual_tokens = total_nll(packed, [packed.train_dataset[0]])
    assert trainer_loss == pytest.approx(manual_total / manual_tokens, rel=1e-4)


@pytest.mark.slow
def test_autocast_adapter_dtype_false_keeps_lora_in_the_base_dtype(tmp_path, tiny_model_dir, fiqa_jsonl_dir):
    """PEFT upcasts the adapters of a bf16 model to float32; ``autocast_adapter_dtype: false`` keeps
    them bf16 (the cast TRL makes for QLoRA), before the optimizer is built from them."""
    common = ["--dtype", "bfloat16", "--max_length", "1024"]
    upcast, _ = build_trainer(make_recipe(tmp_path / "upcast", tiny_model_dir, fiqa_jsonl_dir, *common))
    kept, _ = build_trainer(make_recipe(tmp_path / "kept", tiny_model_dir, fiqa_jsonl_dir, *common,
                                        "--autocast_adapter_dtype", "false"))
    assert lora_dtypes(upcast.model) == {torch.float32}
    assert lora_dtypes(kept.model) == {torch.bfloat16}
    assert all(p.requires_grad for n, p in kept.model.named_parameters() if "lora_" in n)

    from transformers import TrainerCallback

    seen = []

    class RecordDtypes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(lora_dtypes(kept.model))

    kept.add_callback(RecordDtypes())
    kept.train()  # the optimizer takes the bf16 adapters and they stay bf16 while they train
    assert seen and all(dtypes == {torch.bfloat16} for dtypes in seen)


def tiny_peft_model(dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64)
    return get_peft_model(LlamaForCausalLM(config).to(dtype), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def test_adapters_stay_as_peft_made_them_where_no_single_base_dtype_exists(capsys):
    from recipekit.training.trainer import keep_adapters_in_model_dtype_or_say_why

    model = tiny_peft_model(torch.bfloat16)
    model.base_model.model.lm_head.float()  # a model that keeps one module in float32
    keep_adapters_in_model_dtype_or_say_why(model)
    assert lora_dtypes(model) == {torch.float32}
    assert "the frozen weights of this model mix float dtypes" in capsys.readouterr().out


def test_under_fsdp_the_note_says_the_key_has_no_effect(monkeypatch, capsys):
    from recipekit.training.trainer import keep_adapters_in_model_dtype_or_say_why

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    model = tiny_peft_model(torch.bfloat16)
    keep_adapters_in_model_dtype_or_say_why(model)
    assert "no effect under FSDP" in capsys.readouterr().out
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    keep_adapters_in_model_dtype_or_say_why(model)
    assert lora_dtypes(model) == {torch.bfloat16} and capsys.readouterr().out == ""


def lora_dtypes(model) -> set:
    return {p.dtype for n, p in model.named_parameters() if "lora_" in n}
