"""The one place that knows what a FiQA training example looks like.

Preprocessing, training, evaluation and generation all build their text here, so the
model is always asked a question in exactly the form it was trained on. Three formats:

- ``completion``: plain text, ``SYSTEM_PROMPT`` then ``Question: ...`` and ``Answer:``; the
  model continues after ``Answer:``.
- ``chat``: messages for the model's own chat template, ``SYSTEM_PROMPT`` as the system turn
  and the question as the user turn (most instruct models, e.g. SmolLM2-Instruct).
- ``nemotron-chat``: Llama-3.1-Nemotron-Nano's convention from its model card: the system
  turn only switches reasoning (``detailed thinking off``) and every instruction goes in
  the user turn, so ``SYSTEM_PROMPT`` and the question share the user turn.
"""

from __future__ import annotations

from typing import Literal

SYSTEM_PROMPT = (
    "You are a helpful financial assistant. Provide comprehensive, detailed answers to "
    "financial questions. Include relevant context, examples, and explanations when appropriate."
)
# Nemotron-Nano answers directly with this system prompt; "detailed thinking on" would make it
# reason first, which FiQA's reference answers do not contain.
NEMOTRON_REASONING_OFF = "detailed thinking off"

PromptFormat = Literal["completion", "chat", "nemotron-chat"]
PROMPT_FORMATS: tuple[str, ...] = ("completion", "chat", "nemotron-chat")
CHAT_FORMATS: tuple[str, ...] = ("chat", "nemotron-chat")


def build_prompt(question: str) -> str:
    """The plain-text prompt, ending at ``Answer:`` so the completion starts the answer."""
    return f"{SYSTEM_PROMPT}\n\nQuestion: {question}\n\nAnswer:"


def build_completion(answer: str) -> str:
    """The completion that follows :func:`build_prompt`: a space, then the answer verbatim."""
    return f" {answer}"


def build_messages(question: str, prompt_format: PromptFormat = "chat") -> list[dict[str, str]]:
    """The conversational prompt (system + user turns) for the model's own chat template."""
    if prompt_format == "nemotron-chat":
        return [
            {"role": "system", "content": NEMOTRON_REASONING_OFF},
            {"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{question}"},
        ]
    if prompt_format == "chat":
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
    raise ValueError(f"{prompt_format!r} is not a chat format; use one of {CHAT_FORMATS}")


def build_example(question: str, answer: str, prompt_format: PromptFormat) -> dict:
    """One JSONL record in TRL's prompt/completion form, plus the raw fields.

    ``completion`` form: ``prompt + completion`` is the whole training text.
    Chat forms: ``prompt`` holds the system and user messages and ``completion`` the
    assistant message, which TRL renders with the tokenizer's chat template.
    """
    if prompt_format == "completion":
        prompt: str | list[dict[str, str]] = build_prompt(question)
        completion: str | list[dict[str, str]] = build_completion(answer)
    elif prompt_format in CHAT_FORMATS:
        prompt = build_messages(question, prompt_format)
        completion = [{"role": "assistant", "content": answer}]
    else:
        raise ValueError(f"unknown prompt format {prompt_format!r}; use one of {PROMPT_FORMATS}")
    return {"prompt": prompt, "completion": completion, "question": question, "answer": answer}


def detect_prompt_format(record: dict) -> PromptFormat:
    """Tell which form a JSONL record was written in, so evaluation can rebuild its prompt.

    A chat record is matched against the messages each chat format builds for its question;
    a record no format reproduces is reported rather than guessed.
    """
    prompt = record.get("prompt")
    if not isinstance(prompt, list):
        return "completion"
    for prompt_format in CHAT_FORMATS:
        if prompt == build_messages(record.get("question", ""), prompt_format):
            return prompt_format
    raise ValueError(
        "a chat record's prompt matches none of the project's chat formats "
        f"({', '.join(CHAT_FORMATS)}); rewrite the data with `python -m preprocess.fiqa --format ...`"
    )
