"""The files that make a saved model decode as ``recipes.evaluate`` scored it, in any server.

vLLM, TGI, llama.cpp and ``transformers.pipeline`` know nothing of this project: they ask
the folder's chat template for the prompt and its ``generation_config.json`` for when to
stop and how to guard against loops. A fine-tuned model served with the base model's
template or stop tokens talks past the end of its answer or is asked in words it never
trained on. So every exported folder (a run's ``output_dir`` and a merged model) gets:

- a chat template that renders the *training* prompt from the user's question alone, for
  every prompt format: the plain-text ``completion`` format included (its template writes
  the system prompt, ``Question:`` and ``Answer:``), and ``nemotron-chat``'s
  ``detailed thinking off`` system turn with the instructions in the user turn;
- a generation config that stops at every token training ended an answer with (and the
  base model's own EOS ids), decodes greedily with the repetition guard the project's
  evaluation uses, and caps the answer at :data:`DEFAULT_MAX_NEW_TOKENS`.

The template is checked against the prompt :mod:`recipekit.inference.answers` builds, token
for token, before it is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from preprocess.prompt_format import NEMOTRON_REASONING_OFF, SYSTEM_PROMPT, PromptFormat
from recipekit.inference.answers import adds_special_tokens, prompt_text
from recipekit.inference.decoding import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REPETITION_PENALTY,
    PROBE_QUESTION,
    stop_token_ids,
)



def _literal(text: str) -> str:
    """A Jinja string literal of ``text`` (JSON's escaping is Jinja's)."""
    return json.dumps(text)


def _completion_template(tokenizer) -> str:
    """The plain-text training prompt as a chat template: system prompt, then each question as
    ``Question: ...`` and ``Answer:``, each answer after a space and ending with the EOS (the text
    TRL trained on). A system message, when given, replaces the system prompt."""
    starts_with_bos = tokenizer.bos_token is not None and (tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id])
    return (
        ("{{- bos_token -}}" if starts_with_bos else "")
        + "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{{- messages[0]['content'] -}}{%- set turns = messages[1:] -%}"
        f"{{%- else -%}}{{{{- {_literal(SYSTEM_PROMPT)} -}}}}{{%- set turns = messages -%}}{{%- endif -%}}"
        "{%- for message in turns -%}"
        "{%- if message['role'] == 'user' -%}{{- '\\n\\nQuestion: ' + message['content'] + '\\n\\nAnswer:' -}}"
        "{%- elif message['role'] == 'assistant' -%}{{- ' ' + message['content'] + eos_token -}}{%- endif -%}"
        "{%- endfor -%}"
    )


def _default_system_turn(prompt_format: PromptFormat) -> str:
    """Jinja that, when the conversation has no system turn, rewrites it as training wrote it."""
    if prompt_format == "chat":
        return ("{%- if messages and messages[0]['role'] != 'system' -%}"
                f"{{%- set messages = [{{'role': 'system', 'content': {_literal(SYSTEM_PROMPT)}}}] + messages -%}}"
                "{%- endif -%}")
    # nemotron-chat: reasoning off in the system turn, the instructions before the first question.
    return ("{%- if messages and messages[0]['role'] == 'user' -%}"
            f"{{%- set messages = [{{'role': 'system', 'content': {_literal(NEMOTRON_REASONING_OFF)}}}, "
            f"{{'role': 'user', 'content': {_literal(SYSTEM_PROMPT + chr(10) * 2)} + messages[0]['content']}}] "
            "+ messages[1:] -%}"
            "{%- endif -%}")


def serving_chat_template(tokenizer, prompt_format: PromptFormat) -> str:
    """A chat template that renders the training prompt from ``[{"role": "user", "content": question}]``.

    Chat formats keep the model's own template and put a step in front that adds the system turn
    (and, for Nemotron, the instructions) training used when the conversation brings none; a
    conversation with its own system turn renders exactly as the model's template renders it.
    """
    if prompt_format == "completion":
        return _completion_template(tokenizer)
    if not tokenizer.chat_template:
        raise ValueError(f"the {prompt_format} prompt format needs the tokenizer's chat template, and it has none")
    step, model_template = _default_system_turn(prompt_format), tokenizer.chat_template
    # A folder written before (a run's output_dir read back by recipes.merge) already has the step.
    return step + model_template.removeprefix(step)


def serving_generation_config(tokenizer, prompt_format: PromptFormat, base_generation_config=None,
                              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
    """The decoding ``recipes.generate`` and ``recipes.evaluate`` use, as a ``GenerationConfig``."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stop_token_ids(tokenizer, prompt_format, base_generation_config),
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        repetition_penalty=DEFAULT_REPETITION_PENALTY,
        max_new_tokens=max_new_tokens,
    )


def check_template(tokenizer, prompt_format: PromptFormat, template: str) -> None:
    """Raise if ``template``, given the user's question alone, does not give the training prompt's tokens."""
    served = tokenizer.apply_chat_template([{"role": "user", "content": PROBE_QUESTION}], chat_template=template,
                                           add_generation_prompt=True, tokenize=False)
    served_ids = tokenizer(served, add_special_tokens=False)["input_ids"]
    trained_ids = tokenizer(prompt_text(PROBE_QUESTION, prompt_format, tokenizer),
                            add_special_tokens=adds_special_tokens(prompt_format))["input_ids"]
    if served_ids != trained_ids:
        raise RuntimeError(f"the serving chat template for the {prompt_format} format renders another prompt than "
                           f"training used:\n{served!r}\nversus the training prompt's tokens {trained_ids[:40]}...")


def write_serving_files(folder: str | Path, tokenizer, prompt_format: PromptFormat, base_generation_config=None) -> None:
    """Save ``tokenizer`` with the serving chat template and the serving ``generation_config.json``
    into ``folder`` (the tokenizer object itself is left unchanged)."""
    import copy

    template = serving_chat_template(tokenizer, prompt_format)
    check_template(tokenizer, prompt_format, template)
    served = copy.deepcopy(tokenizer)
    served.chat_template = template
    served.save_pretrained(folder)
    serving_generation_config(tokenizer, prompt_format, base_generation_config).save_pretrained(folder)
