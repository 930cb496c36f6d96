"""Load the JSONL splits that ``python -m preprocess.fiqa`` writes, and audit truncation.

TRL truncates each tokenized example to ``max_length`` and then drops, without a word,
the examples left with no supervised token. This module counts those cases before
training, leaves the empty ones out itself and reports every count, so nothing is
trained on (or dropped) silently.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from recipekit.errors import RecipeError


def split_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.jsonl"


def preprocess_hint(data_dir: str | Path) -> str:
    return f"python -m preprocess.fiqa --out {data_dir}"


def _text_problem(value, name: str) -> str | None:
    """Why one prompt or completion text cannot be trained on, or None."""
    from recipekit.runtime.file_checks import control_character

    if not isinstance(value, str):
        return f"`{name}` is {type(value).__name__}, not text"
    if not value.strip():
        return f"`{name}` is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"`{name}` holds an unpaired surrogate escape (\\ud800-\\udfff), not text"
    if bad := control_character(value):
        return f"`{name}` holds the control character {bad}"
    return None


# A FiQA answer is a few KB; a record a thousand times longer is not training data, and reading
# one line of a GiB would exhaust the machine's memory before anything could say so.
MAX_RECORD_BYTES = 16 * 2**20
# The roles a chat record may hold, in order: an optional system turn and the user's question in
# the prompt, the assistant's answer in the completion (what completion-only loss trains on).
PROMPT_ROLES = ("system", "user")
COMPLETION_ROLES = ("assistant",)


def _roles_problem(prompt: list[dict], completion: list[dict]) -> str | None:
    prompt_roles = [m["role"] for m in prompt]
    completion_roles = [m["role"] for m in completion]
    if prompt_roles not in (["user"], ["system", "user"]):
        return (f"a chat `prompt` holds the roles {prompt_roles}; it must be the user's question, after an optional "
                "system turn (`system`, `user`), so the model learns to answer the user")
    if completion_roles != ["assistant"]:
        return (f"a chat `completion` holds the roles {completion_roles}; it must be the one `assistant` answer, "
                "which is what the loss trains on")
    return None


def record_problem(record) -> str | None:
    """Why a JSONL record is not a prompt/completion example as TRL takes it, or None: both texts,
    or both lists of chat messages with a text ``role`` and ``content``."""
    if not isinstance(record, dict) or not {"prompt", "completion"} <= set(record):
        return "a record needs `prompt` and `completion`: it was not written by preprocess.fiqa"
    prompt, completion = record["prompt"], record["completion"]
    if isinstance(prompt, list) or isinstance(completion, list):
        for name, messages in (("prompt", prompt), ("completion", completion)):
            if not isinstance(messages, list) or not messages:
                return f"`{name}` must be a non-empty list of chat messages, like the other field"
            for message in messages:
                if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                    return f"`{name}` holds a message without a text `role`"
                if problem := _text_problem(message.get("content"), f"{name}` message `content"):
                    return problem
        return _roles_problem(prompt, completion)
    return _text_problem(prompt, "prompt") or _text_problem(completion, "completion")


def read_json_lines(path: Path, fix: str):
    """``(line number, value)`` for each non-blank line of a JSONL file, or one error naming the file,
    the line and what is wrong with it, ending in ``fix``.

    Read line by line rather than through ``datasets``' JSON builder: a torn or hand-edited
    file then fails with its line number instead of an Arrow traceback, and no progress bar
    named "Generating train split" appears for what is a plain file read.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise RecipeError(f"data file {path} cannot be read ({exc.strerror or exc}). {fix}") from None
    with handle:
        number = 0
        while raw := handle.readline(MAX_RECORD_BYTES + 1):
            number += 1
            if len(raw) > MAX_RECORD_BYTES:
                raise RecipeError(
                    f"{path}, line {number}: a record longer than {MAX_RECORD_BYTES // 2**20} MiB, which is no "
                    f"question and answer (a FiQA record is a few KB); the file is damaged or not a split. {fix}"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecipeError(f"{path}, line {number}: not UTF-8 text (byte {exc.start} of the line). {fix}") from None
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise RecipeError(
                    f"{path}, line {number}: not a JSON object ({exc.msg} at column {exc.colno}); the file may be "
                    f"truncated or edited by hand. {fix}"
                ) from None
            except (ValueError, RecursionError) as exc:
                raise RecipeError(f"{path}, line {number}: not a record preprocess.fiqa writes ({exc}). {fix}") from None
            yield number, value


def read_jsonl_records(path: Path, data_dir: str | Path) -> list[dict]:
    """Every record of a JSONL split, each checked as TRL will use it (texts or chat messages, not
    empty, no control bytes), or one error naming the file, the line and what is wrong with it."""
    fix = f"Regenerate it with `{preprocess_hint(data_dir)}`."
    records = []
    for number, record in read_json_lines(path, fix):
        if problem := record_problem(record):
            raise RecipeError(f"{path}, line {number}: {problem}. {fix}")
        records.append(record)
    return records


def read_split(data_dir: str | Path, split: str) -> list[dict]:
    """The records of one split, checked: the file exists, parses line by line, and is not empty."""
    from recipekit.runtime.file_checks import unreadable_reason

    path = split_path(data_dir, split)
    reason = unreadable_reason(path)
    if reason and reason != "does not exist":
        raise RecipeError(f"data file {path} {reason}. Regenerate it with `{preprocess_hint(data_dir)}`.")
    if not path.is_file():
        raise RecipeError(
            f"data file {path} does not exist. Write the FiQA splits with `{preprocess_hint(data_dir)}` "
            "(add --source DIR for a local copy), or point `data_dir` at the folder that holds them."
        )
    records = read_jsonl_records(path, data_dir)
    if not records:
        raise RecipeError(f"{path} holds no examples. Regenerate it with `{preprocess_hint(data_dir)}`.")
    return records


def records_dataset(records: list[dict], data_dir: str | Path, split: str):
    """A ``datasets.Dataset`` of the records' ``prompt`` and ``completion``, as TRL takes them."""
    from datasets import Dataset

    try:
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    except (TypeError, ValueError) as exc:  # pyarrow's errors derive from these
        raise RecipeError(
            f"{split_path(data_dir, split)} mixes record shapes (plain-text and chat prompts, or other types): "
            f"{str(exc).splitlines()[0]}. Give every record of a split the same shape: `prompt` and `completion` "
            f"both text, or both lists of chat messages (`{preprocess_hint(data_dir)}` writes FiQA that way)."
        ) from None


def load_split(data_dir: str | Path, split: str):
    """One split as a ``datasets.Dataset`` holding only ``prompt`` and ``completion``."""
    return records_dataset(read_split(data_dir, split), data_dir, split)


@dataclass
class TruncationReport:
    """What ``max_length`` does to one split."""

    split: str
    examples: int
    max_length: int | None
    longest_tokens: int
    longest_prompt_tokens: int
    answers_cut: int  # examples that lose the end of their answer (or its EOS)
    left_out: int  # examples with no answer token left: not trained or evaluated on

    def describe(self) -> str:
        if self.max_length is None:
            return f"{self.split}: {self.examples} examples, longest {self.longest_tokens} tokens, no max_length."
        return (
            f"{self.split}: {self.examples} examples, longest {self.longest_tokens} tokens; "
            f"{self.answers_cut} exceed max_length={self.max_length} and lose the end of their answer; "
            f"{self.left_out} keep no answer token and are left out."
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def tokenize_like_trl(example: dict, tokenizer, eos: str) -> tuple[int, list[int]]:
    """(prompt tokens, all token ids) of one prompt/completion example, as TRL's SFTTrainer
    tokenizes it: the chat template for conversational records, else the text with ``eos``
    appended to the completion; the completion starts where the tokenized prompt and
    prompt + completion diverge (TRL's own ``common_prefix_length``)."""
    from trl.data_utils import common_prefix_length

    prompt, completion = example["prompt"], example["completion"]
    if isinstance(prompt, list):  # conversational
        prompt_ids = _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        full_ids = _ids(tokenizer.apply_chat_template(prompt + completion, tokenize=True))
    else:
        if not completion.endswith(eos):
            completion = completion + eos
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion)["input_ids"]
    return common_prefix_length(prompt_ids, full_ids), full_ids


def token_spans(dataset, tokenizer, eos_token: str | None = None) -> list[tuple[int, int]]:
    """(prompt tokens, total tokens) per example, tokenized as TRL's SFTTrainer tokenizes them.

    TRL does this inside the trainer, after the model has loaded; the audit needs it before
    (to refuse a ``max_length`` that leaves no answer, in seconds rather than minutes). So
    :func:`tokenize_like_trl` repeats TRL's steps, with the EOS TRL appends (the recipe's
    ``eos_token``, else the tokenizer's); ``tests/test_masking.py`` compares its token ids with
    the trainer's tokenized dataset, so a change in TRL fails CI.
    """
    eos = eos_token or tokenizer.eos_token
    spans = []
    for example in dataset:
        prompt_length, ids = tokenize_like_trl(example, tokenizer, eos)
        spans.append((prompt_length, len(ids)))
    return spans


def audit_truncation(dataset, tokenizer, max_length: int | None, split: str, truncates: bool,
                     eos_token: str | None = None):
    """Count cut answers and answer-less examples; return the dataset without the latter and the report."""
    spans = token_spans(dataset, tokenizer, eos_token)
    limit = max_length if (truncates and max_length is not None) else None
    keep = [i for i, (p, t) in enumerate(spans) if (min(t, limit) if limit else t) - p > 0]
    report = TruncationReport(
        split=split,
        examples=len(spans),
        max_length=limit,
        longest_tokens=max(t for _, t in spans),
        longest_prompt_tokens=max(p for p, _ in spans),
        answers_cut=sum(1 for p, t in spans if limit and t > limit and limit > p),
        left_out=len(spans) - len(keep),
    )
    if report.left_out:
        dataset = dataset.select(keep)
    return dataset, report
