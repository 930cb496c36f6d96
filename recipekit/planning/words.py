"""Words of a prompt/completion record: what the plan counts when the recipe's tokenizer cannot be loaded.

One definition for both sides of the estimate: ``bench/tokens_per_word.py`` measures a real
tokenizer's tokens per word with it, and the plan multiplies the same word count by that ratio.
Words are whitespace-separated runs (``str.split``); a chat record counts the words of its
messages' contents (the chat template's own tokens are not words, and are not counted).
"""

from __future__ import annotations


def text_pieces(field: str | list[dict]) -> list[str]:
    """The texts of a ``prompt`` or ``completion``: the string itself, or each chat message's content."""
    if isinstance(field, list):
        return [str(message.get("content", "")) for message in field]
    return [field]


def word_count(text: str) -> int:
    """Whitespace-separated words: the unit the tokens-per-word ratio is measured in."""
    return len(text.split())


def record_words(record: dict) -> int:
    """Words of a whole example (prompt and completion), as the ratio was measured."""
    return sum(word_count(t) for name in ("prompt", "completion") for t in text_pieces(record[name]))
