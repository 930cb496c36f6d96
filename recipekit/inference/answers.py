"""Answers from a model, batched and greedy, in the training prompt format (the library behind the
``recipes.generate`` and ``recipes.evaluate`` commands and the GenerationEval plugin).

The prompt is rebuilt from the question by ``preprocess.prompt_format`` (the function that
wrote the training data), in whichever form the run trained on, so the model is asked
exactly as it learned.
"""

from __future__ import annotations

from dataclasses import dataclass

from preprocess.prompt_format import PromptFormat, build_messages, build_prompt
from recipekit.inference.decoding import DEFAULT_MAX_NEW_TOKENS, stop_token_ids


# Questions a batch where no free-memory figure sizes it: on a CPU, and for a model whose config
# does not say its cache's shape. It was the fixed default before the batch was sized from GPU memory.
FALLBACK_GENERATION_BATCH_SIZE = 128
# The share of free GPU memory a batch may plan to fill: the estimate below leaves out the
# allocator's fragmentation and the logits processors' temporaries.
GPU_MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class Answer:
    """One generated answer; ``stopped`` is False when it ran into ``max_new_tokens`` instead of EOS."""

    text: str
    new_tokens: int
    stopped: bool


def prompt_text(question: str, prompt_format: PromptFormat, tokenizer) -> str:
    """The text the model sees before its answer (chat formats: rendered by the tokenizer's template)."""
    if prompt_format == "completion":
        return build_prompt(question)
    return tokenizer.apply_chat_template(
        build_messages(question, prompt_format), add_generation_prompt=True, tokenize=False
    )


def adds_special_tokens(prompt_format: PromptFormat) -> bool:
    """Training tokenized the plain prompt with the tokenizer's special tokens (BOS); a chat
    template writes its own BOS, so it must not be added twice."""
    return prompt_format == "completion"


def prompts_and_lengths(questions: list[str], prompt_format: PromptFormat, tokenizer) -> tuple[list[str], list[int]]:
    """Each question's prompt text and its length in tokens, as generation encodes it."""
    texts = [prompt_text(q, prompt_format, tokenizer) for q in questions]
    encoded = tokenizer(texts, add_special_tokens=adds_special_tokens(prompt_format))["input_ids"]
    return texts, [len(ids) for ids in encoded]


def auto_batch_size(model, tokenizer, questions: list[str], prompt_format: PromptFormat, max_new_tokens: int) -> int:
    """The batch :func:`generate_answers` answers ``questions`` in when given none."""
    _, lengths = prompts_and_lengths(questions, prompt_format, tokenizer)
    return fitting_batch_size(model, len(questions), max(lengths, default=1), max_new_tokens)


def bytes_per_question(config, prompt_tokens: int, max_new_tokens: int, dtype_bytes: int = 2) -> int:
    """GPU memory one question holds while its batch is answered: its KV cache at full length, the
    prefill's widest activations over its prompt (the MLP's gate, up and product rows) and its
    float32 logits with the processors' copies.

    For Llama-3.1-8B at 256 new tokens that is ~0.13 MB of cache a token: ~50 MB for a FiQA question.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    cache_per_token = 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes
    prefill_per_token = 4 * (getattr(text, "intermediate_size", None) or 4 * text.hidden_size) * dtype_bytes
    logits = 4 * text.vocab_size * 4
    return (prompt_tokens + max_new_tokens) * cache_per_token + prompt_tokens * prefill_per_token + logits


def fitting_batch_size(model, questions: int, longest_prompt_tokens: int, max_new_tokens: int) -> int:
    """How many questions to answer at once when no batch size is given: all of them where the GPU's
    free memory holds their caches (decoding costs about one pass over the weights per new token
    whatever the batch, so fewer, bigger batches finish sooner), else as many as fit; on a CPU, or
    for a config without the attention shape to size the cache from, :data:`FALLBACK_GENERATION_BATCH_SIZE`.
    A model spread over several GPUs is sized by the one with the least free memory (conservative:
    each GPU holds only its own layers' cache)."""
    import torch

    fallback = max(1, min(questions, FALLBACK_GENERATION_BATCH_SIZE))
    devices = {p.device for p in model.parameters() if p.device.type == "cuda"}
    if not devices:
        return fallback
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.bfloat16)
    try:
        per_question = bytes_per_question(model.config, longest_prompt_tokens, max_new_tokens,
                                          torch.finfo(dtype).bits // 8)
    except (AttributeError, TypeError, ZeroDivisionError):
        print(f"note: the generation batch cannot be sized from {type(model.config).__name__} (no attention shape "
              f"in its config); answering {fallback} questions at a time. Set --generation_batch_size to choose.")
        return fallback

    def free_bytes(device) -> int:  # free on the card, plus what torch holds cached but unused
        return (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
                - torch.cuda.memory_allocated(device))

    free = min(free_bytes(device) for device in devices)
    return max(1, min(questions, int(free * GPU_MEMORY_SHARE // per_question)))


def generate_answers(
    model,
    tokenizer,
    questions: list[str],
    prompt_format: PromptFormat,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int | None = 8,
    description: str = "generating",
    progress: bool = True,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> list[Answer]:
    """Greedy answers, in the questions' order, from left-padded batches of up to ``batch_size``
    (None: as many as the GPU's free memory holds, :func:`fitting_batch_size`; made smaller while
    the GPU runs out of memory), stopping at any of :func:`~recipekit.inference.decoding.stop_token_ids`
    (the token training ended answers with and the model's EOS ids, as the served model stops).

    ``repetition_penalty`` (> 1 discourages tokens already in the text) and
    ``no_repeat_ngram_size`` (forbids repeating any n-gram) are transformers' guards against
    the loops greedy decoding falls into; 1.0 and 0 leave decoding purely greedy. The
    tokenizer is left as it was: left padding is asked for per call, not set on it.
    """
    import torch
    from accelerate.utils import find_executable_batch_size
    from tqdm.auto import tqdm

    texts, lengths = prompts_and_lengths(questions, prompt_format, tokenizer)
    add_special = adds_special_tokens(prompt_format)
    stops, pad_id = stop_token_ids(tokenizer, prompt_format, getattr(model, "generation_config", None)), tokenizer.pad_token_id
    # Longest prompts first: batches of like lengths waste little on padding, and a batch too big
    # for the GPU fails on the first batch, not after minutes of work.
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    answers: dict[int, Answer] = {}
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = fitting_batch_size(model, len(texts), max(lengths, default=1), max_new_tokens)

    @find_executable_batch_size(starting_batch_size=max(1, batch_size))
    def answer_all(size: int) -> None:
        """Every question not answered yet, ``size`` at a time; after an out-of-memory error accelerate
        calls again with a smaller ``size``, and the answers already made are kept."""
        pending = [i for i in order if i not in answers]
        bar.set_postfix(batch=size)  # the batch in use, also after a shrink
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            encoded = tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True, padding_side="left",
                add_special_tokens=add_special,
            ).to(device)
            with torch.no_grad():
                output = model.generate(
                    **encoded, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=pad_id,
                    repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                    use_cache=True,  # training may have turned the cache off (activation checkpointing)
                )
            for index, row in zip(chunk, output[:, encoded["input_ids"].shape[1] :].tolist()):
                end = next((i for i, t in enumerate(row) if t in stops), None)
                stopped = end is not None
                kept = row[:end] if stopped else [t for t in row if t != pad_id]
                text = tokenizer.decode(kept, skip_special_tokens=True).strip()
                answers[index] = Answer(text=text, new_tokens=len(kept), stopped=stopped)
            bar.update(len(chunk))

    with tqdm(total=len(texts), desc=description, unit="question", disable=not progress) as bar:
        answer_all()
    return [answers[i] for i in range(len(texts))]
