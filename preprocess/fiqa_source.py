"""Read FiQA's raw CSV files, from the hub or from a local copy, through one parser.

The hub dataset ``explodinggradients/fiqa`` is a loading-script dataset that ``datasets``
4+ refuses to run, so the hub route downloads the same CSV files that the script reads
and hands them to the parser that local copies go through.
"""

from __future__ import annotations

import ast
import csv
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from recipekit.errors import RecipeError
from recipekit.runtime.file_checks import (
    control_character,
    starts_as_utf16,
    unreadable_reason,
)

HUB_REPO_ID = "explodinggradients/fiqa"
# Output split name -> CSV file name in the hub layout (config ``main``).
SPLIT_FILES: dict[str, str] = {"train": "train.csv", "validation": "dev.csv", "test": "test.csv"}
REQUIRED_COLUMNS = ("question", "ground_truths")

BadRowPolicy = Literal["error", "skip"]

# Far beyond any real FiQA row (longest answer ~25k characters): a field this long is a
# broken row, such as an unclosed quote that swallowed the rest of the file.
MAX_QUESTION_CHARS = 5_000
MAX_ANSWER_CHARS = 200_000

# FiQA answers run to tens of kilobytes; the csv module's default field limit is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class FiqaDataError(RecipeError):
    """Raised for input that cannot be turned into training data; the message says how to fix it."""


@dataclass
class ParsedSplit:
    """The (question, answer) pairs of one split and the rows skipped, counted by reason."""

    name: str
    source_file: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def parse_ground_truths(raw: str) -> list[str]:
    """Parse the Python-repr list in ``ground_truths`` (``ast.literal_eval``, never ``eval``)."""
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ValueError(f"ground_truths is not a Python list literal ({type(exc).__name__})") from None
    if not isinstance(value, list):
        raise ValueError(f"ground_truths is a {type(value).__name__}, expected a list of strings")
    if not value:
        raise ValueError("ground_truths is an empty list")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("ground_truths holds a value that is not a string")
    return value


def _has_undecodable_bytes(text: str) -> bool:
    """Bytes that were not UTF-8 arrive as lone surrogates (errors='surrogateescape')."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def row_problem(row: dict) -> tuple[str, str | None]:
    """Return ``(reason, answer)``: reason is '' for a usable row, else a short label."""
    if any(_has_undecodable_bytes(v) for v in row.values() if isinstance(v, str)):
        return "non-UTF-8 bytes", None
    question = row.get("question")
    if question is None or not question.strip():
        return "empty question", None
    if len(question) > MAX_QUESTION_CHARS:
        return f"question longer than {MAX_QUESTION_CHARS:,} characters", None
    raw = row.get("ground_truths")
    if raw is None or not raw.strip():
        return "empty ground_truths", None
    try:
        answers = parse_ground_truths(raw)
    except ValueError as exc:
        return str(exc), None
    answer = answers[0]
    if not answer.strip():
        return "first ground truth is empty", None
    for name, text in (("question", question), ("answer", answer)):
        if bad := control_character(text):
            return f"control character {bad} in the {name}", None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"unpaired surrogate escape in the {name}", None
    if None in row:  # csv.DictReader's place for fields beyond the header
        return f"{len(row[None])} more field(s) than the header has columns", None
    if len(answer) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS:,} characters", None
    return "", answer


def read_split_csv(path: Path, split: str, on_bad_row: BadRowPolicy = "error") -> ParsedSplit:
    """Parse one split file; bad rows raise (``error``) or are counted per reason (``skip``)."""
    parsed = ParsedSplit(name=split, source_file=path.name)
    first_seen: dict[tuple[str, str], int] = {}
    reason = unreadable_reason(path)
    if reason:
        raise FiqaDataError(f"{path} {reason}. Point --source at a copy of the hub layout ({HUB_REPO_ID}).")
    try:
        with path.open("rb") as probe:
            head = probe.read(4)
    except OSError as exc:
        raise FiqaDataError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if starts_as_utf16(head):
        raise FiqaDataError(f"{path} is UTF-16 text; save it as UTF-8 (the hub files are UTF-8).")
    try:
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            reader = csv.DictReader(handle)
            duplicated = sorted({c for c in (reader.fieldnames or []) if (reader.fieldnames or []).count(c) > 1})
            if duplicated:
                raise FiqaDataError(f"{path}: the header names column(s) {', '.join(duplicated)} more than once; "
                                    "keep one of each.")
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise FiqaDataError(
                    f"{path}: missing column(s) {', '.join(missing)} (found {reader.fieldnames}). "
                    "A FiQA split file needs a header with 'question' and 'ground_truths', as in the "
                    f"hub dataset {HUB_REPO_ID}."
                )
            for row_number, row in enumerate(reader, start=1):
                reason, answer = row_problem(row)
                detail = reason
                if not reason:
                    key = (row["question"], answer)
                    if key not in first_seen:
                        first_seen[key] = row_number
                        parsed.pairs.append(key)
                        continue
                    reason = "duplicate row"
                    detail = f"duplicate of data row {first_seen[key]} (same question and answer)"
                if on_bad_row == "error":
                    raise FiqaDataError(
                        f"{path}, data row {row_number} (line {reader.line_num}): {detail}. Fix or remove "
                        "the row, or rerun with --on-bad-row skip to drop such rows and count them in "
                        "the manifest."
                    )
                parsed.skipped[reason] += 1
    except csv.Error as exc:
        raise FiqaDataError(f"{path}: malformed CSV ({exc}). Check quoting in the file.") from None
    if not parsed.pairs:
        skipped = f" ({sum(parsed.skipped.values())} bad rows were skipped)" if parsed.skipped else ""
        raise FiqaDataError(f"{path} holds no usable rows{skipped}: a split must not be empty. Check that the file is "
                            f"the {split} split of {HUB_REPO_ID}.")
    return parsed


def local_split_files(source_dir: Path) -> dict[str, Path]:
    """The split files of a local copy in the hub layout; names the missing ones if any."""
    if not source_dir.is_dir():
        raise FiqaDataError(
            f"--source {source_dir} is not a directory. Point it at a folder holding "
            f"{', '.join(SPLIT_FILES.values())}, or leave --source out to download from the hub."
        )
    paths = {split: source_dir / name for split, name in SPLIT_FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise FiqaDataError(
            f"--source {source_dir} lacks {', '.join(missing)}. A FiQA copy in the hub layout holds "
            f"{', '.join(SPLIT_FILES.values())}."
        )
    return paths


def hub_split_files(repo_id: str = HUB_REPO_ID, revision: str | None = None) -> dict[str, Path]:
    """Download the split CSVs from the hub (cached by ``huggingface_hub``)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    paths: dict[str, Path] = {}
    for split, name in SPLIT_FILES.items():
        try:
            local = hf_hub_download(repo_id=repo_id, repo_type="dataset", filename=name, revision=revision)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
            raise FiqaDataError(
                f"could not download {name} of the dataset {repo_id} from the Hugging Face hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
                "Check the network (and HF_HUB_OFFLINE, which must be unset to download), or pass "
                "--source DIR with a local copy holding train.csv, dev.csv and test.csv."
            ) from None
        paths[split] = Path(local)
    return paths
