"""Build what the smoke recipe trains on, offline: a FiQA-layout fixture and a tiny Llama.

The smoke recipe runs the whole path (preprocess, train, evaluate, save) on a CPU in
~15 s with no network, so it needs a model and data that the project makes
itself: a byte-level BPE tokenizer trained on the fixture text, with Llama 3's special
tokens, and a two-layer Llama initialised from a fixed seed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from preprocess.fiqa import preprocess
from preprocess.fixture import fixture_rows, write_fiqa_fixture
from preprocess.prompt_format import SYSTEM_PROMPT

BOS, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"

# Llama 3's chat layout, trimmed: enough for the ``chat`` prompt format to run end to end.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def fixture_corpus() -> list[str]:
    corpus = [SYSTEM_PROMPT, "Question:", "Answer:"]
    for rows in fixture_rows().values():
        for question, answers in rows:
            corpus.extend([question, *answers])
    return corpus


def build_tokenizer(vocab_size: int = 1024, corpus: list[str] | None = None):
    """A real fast tokenizer (byte-level BPE) with Llama 3's special tokens, trained on
    ``corpus`` (default: the fixture's text)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    corpus = fixture_corpus() if corpus is None else [SYSTEM_PROMPT, "Question:", "Answer:", *corpus]

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, HEADER_START, HEADER_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_llama(tokenizer, seed: int = 0):
    """A two-layer Llama small enough to train on a CPU in seconds."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # Wider than Llama's 0.02 so the frozen random lm_head can express a confident
        # prediction; with 0.02 every logit stays near zero and LoRA cannot move the loss.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def save_tiny_llama(model_dir: str | Path) -> Path:
    """Write the tokenizer and tiny model to ``model_dir`` (a folder ``from_pretrained`` loads)."""
    target = Path(model_dir)
    tokenizer = build_tokenizer()
    model = build_tiny_llama(tokenizer)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(staging)
    model.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def ensure_smoke_assets(model_dir: str | Path, data_dir: str | Path, prompt_format: str = "completion") -> None:
    """Build the tiny model and the preprocessed fixture where missing; cheap when present."""
    model_path, data_path = Path(model_dir), Path(data_dir)
    if not (model_path / "config.json").is_file():
        save_tiny_llama(model_path)
    if not (data_path / "manifest.json").is_file():
        raw_dir = write_fiqa_fixture(data_path.with_name(data_path.name + "-csv"))
        preprocess(data_path, source_dir=raw_dir, prompt_format=prompt_format)
