"""How the project decodes an answer, in one place: when an answer ends and how loops are guarded.

``recipes.generate``, ``recipes.evaluate``, the GenerationEval plugin and the
``generation_config.json`` written beside every exported model
(:mod:`recipekit.inference.serving`) all take their stop tokens and defaults from here, so a
served model stops where the evaluated one stopped.
"""

from __future__ import annotations

from preprocess.prompt_format import PromptFormat, build_messages

# Greedy decoding of a fine-tuned SmolLM2 repeated one sentence until max_new_tokens in 30 of 48
# answers; a penalty of 1.2 ended those loops and was the decoding the quality sweep chose
# (bench/README.md). The CLIs, the GenerationEval plugin and the served generation config
# default to it; 1.0 is plain greedy.
DEFAULT_REPETITION_PENALTY = 1.2
# recipes.generate's default answer length; FiQA's reference answers are ~140 words (~190 tokens)
# on average, so 256 new tokens end nearly all of them at EOS rather than mid-sentence.
DEFAULT_MAX_NEW_TOKENS = 256
# A question for rendering a conversation to look at what the chat template writes around it.
PROBE_QUESTION = "Is a Roth IRA worth it if I expect a higher tax rate later?"


def _as_ids(value) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else [int(v) for v in value]


def end_of_answer_token(tokenizer, prompt_format: PromptFormat) -> int | None:
    """The token training put right after each answer: the EOS TRL appended in the completion
    format; in a chat format, the first token the template writes after the assistant's text
    (``<|eot_id|>``, ``<|im_end|>``, ``<end_of_turn>``...), which completion-only loss taught."""
    if prompt_format == "completion":
        return tokenizer.eos_token_id
    marker = "Fine."
    messages = [*build_messages(PROBE_QUESTION, prompt_format), {"role": "assistant", "content": marker}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    after = text[text.rindex(marker) + len(marker):]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special = set(tokenizer.all_special_ids) | {i for i, token in added.items() if getattr(token, "special", False)}
    if ids and ids[0] in special:
        return ids[0]
    return tokenizer.eos_token_id


def stop_token_ids(tokenizer, prompt_format: PromptFormat, generation_config=None) -> list[int]:
    """Every token an answer ends at: the end-of-answer token training taught, the tokenizer's EOS
    and the base model's own EOS ids (Llama 3 models list several), in that order, each once."""
    ids = [end_of_answer_token(tokenizer, prompt_format), tokenizer.eos_token_id]
    if generation_config is not None:
        ids += _as_ids(getattr(generation_config, "eos_token_id", None))
    return list(dict.fromkeys(i for i in ids if i is not None))
