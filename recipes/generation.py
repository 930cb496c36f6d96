"""Batched greedy generation in the training prompt format.

The prompt is rebuilt from the question by ``preprocess.prompt_format`` (the function that
wrote the training data), in whichever form the run trained on, so the model is asked
exactly as it learned.
"""

from __future__ import annotations

from collections.abc import Iterator

from preprocess.prompt_format import PromptFormat, build_messages, build_prompt


def prompt_text(question: str, prompt_format: PromptFormat, tokenizer) -> str:
    """The text the model sees before its answer (chat: rendered by the tokenizer's template)."""
    if prompt_format == "chat":
        return tokenizer.apply_chat_template(build_messages(question), add_generation_prompt=True, tokenize=False)
    return build_prompt(question)


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_answers(
    model,
    tokenizer,
    questions: list[str],
    prompt_format: PromptFormat,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    description: str = "generating",
) -> list[str]:
    """Greedy answers, left-padded batches, stopping at EOS; returns the decoded answers."""
    import torch
    from tqdm.auto import tqdm

    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    texts = [prompt_text(q, prompt_format, tokenizer) for q in questions]
    # Training tokenized the plain prompt with the tokenizer's special tokens (BOS); a chat
    # template writes its own BOS, so it must not be added twice.
    add_special = prompt_format != "chat"
    answers: list[str] = []
    device = next(model.parameters()).device
    with tqdm(total=len(texts), desc=description, unit="q") as progress:
        for batch in _batches(texts, batch_size):
            encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=add_special).to(device)
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
            progress.update(len(batch))
    return answers
