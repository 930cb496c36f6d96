"""The one place that knows what a FiQA training example looks like.

Preprocessing, training, evaluation and generation all build their text here, so the
model is always asked a question in exactly the form it was trained on.
"""

from __future__ import annotations

from typing import Literal

SYSTEM_PROMPT = (
    "You are a helpful financial assistant. Provide comprehensive, detailed answers to "
    "financial questions. Include relevant context, examples, and explanations when appropriate."
)

PromptFormat = Literal["completion", "chat"]
PROMPT_FORMATS: tuple[str, ...] = ("completion", "chat")


def build_prompt(question: str) -> str:
    """The plain-text prompt, ending at ``Answer:`` so the completion starts the answer."""
    return f"{SYSTEM_PROMPT}\n\nQuestion: {question}\n\nAnswer:"


def build_completion(answer: str) -> str:
    """The completion that follows :func:`build_prompt`: a space, then the answer verbatim."""
    return f" {answer}"


def build_messages(question: str) -> list[dict[str, str]]:
    """The conversational prompt (system + user) for the model's own chat template."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
    ]


def build_example(question: str, answer: str, prompt_format: PromptFormat) -> dict:
    """One JSONL record in TRL's prompt/completion form, plus the raw fields.

    ``completion`` form: ``prompt + completion`` is the whole training text.
    ``chat`` form: ``prompt`` holds the system and user messages and ``completion`` the
    assistant message, which TRL renders with the tokenizer's chat template.
    """
    if prompt_format == "completion":
        prompt: str | list[dict[str, str]] = build_prompt(question)
        completion: str | list[dict[str, str]] = build_completion(answer)
    elif prompt_format == "chat":
        prompt = build_messages(question)
        completion = [{"role": "assistant", "content": answer}]
    else:
        raise ValueError(f"unknown prompt format {prompt_format!r}; use one of {PROMPT_FORMATS}")
    return {"prompt": prompt, "completion": completion, "question": question, "answer": answer}


def detect_prompt_format(record: dict) -> PromptFormat:
    """Tell which form a JSONL record was written in, so evaluation can rebuild its prompt."""
    return "chat" if isinstance(record.get("prompt"), list) else "completion"
