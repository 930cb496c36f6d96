"""Malformed FiQA rows: each kind is named (error) or counted (skip); random rows never crash
the parser with a traceback and never change a valid answer (property-based, hypothesis)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preprocess.fiqa_source import FiqaDataError, read_split_csv
from recipekit.runtime.file_checks import control_character

GOOD = ("What is a bond?", repr(["A bond is a loan.", "Another answer."]))

BAD_ROWS = [
    ("empty question", ("   ", repr(["An answer."])), "empty question"),
    ("empty ground_truths", ("Q1?", ""), "empty ground_truths"),
    ("not a literal", ("Q2?", "['unclosed"), "ground_truths is not a Python list literal"),
    ("not a list", ("Q3?", "'just a string'"), "ground_truths is a str, expected a list of strings"),
    ("empty list", ("Q4?", "[]"), "ground_truths is an empty list"),
    ("non-string item", ("Q5?", "[1, 'two']"), "ground_truths holds a value that is not a string"),
    ("blank first answer", ("Q6?", repr(["  ", "second"])), "first ground truth is empty"),
    ("extreme question", ("Q" * 6000, repr(["An answer."])), "question longer than 5,000 characters"),
    ("extreme answer", ("Q7?", repr(["word " * 50_000])), "answer longer than 200,000 characters"),
    ("duplicate", GOOD, "duplicate of data row 1 (same question and answer)"),
]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "ground_truths"])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(("kind", "row", "message"), BAD_ROWS, ids=[r[0] for r in BAD_ROWS])
def test_each_bad_row_is_named_with_file_and_row(tmp_path, kind, row, message):
    path = write_csv(tmp_path / "dev.csv", [GOOD, row])
    with pytest.raises(FiqaDataError) as info:
        read_split_csv(path, "validation")
    assert f"{path}, data row 2" in str(info.value) and message in str(info.value)
    assert "--on-bad-row skip" in str(info.value)


def test_skip_counts_every_bad_row_by_reason(tmp_path):
    path = write_csv(tmp_path / "train.csv", [GOOD] + [row for _, row, _ in BAD_ROWS])
    parsed = read_split_csv(path, "train", on_bad_row="skip")
    assert parsed.pairs == [("What is a bond?", "A bond is a loan.")]
    assert sum(parsed.skipped.values()) == len(BAD_ROWS)
    assert parsed.skipped["duplicate row"] == 1 and parsed.skipped["empty question"] == 1


def test_non_utf8_bytes_are_named_or_skipped(tmp_path):
    path = tmp_path / "test.csv"
    body = "question,ground_truths\n" + f'{GOOD[0]},"{GOOD[1]}"\n'
    path.write_bytes(body.encode() + b'Caf\xe9 question?,"[\'An answer.\']"\n')
    with pytest.raises(FiqaDataError, match=r"data row 2 .*non-UTF-8 bytes"):
        read_split_csv(path, "test")
    parsed = read_split_csv(path, "test", on_bad_row="skip")
    assert len(parsed.pairs) == 1 and parsed.skipped == Counter({"non-UTF-8 bytes": 1})


# --- property-based: random rows -------------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)
valid_answers = st.lists(text.filter(lambda t: t.strip()), min_size=1, max_size=3)
raw_ground_truths = st.one_of(
    valid_answers.map(repr),  # well formed
    text,  # anything at all
    st.lists(st.one_of(st.integers(), text, st.none()), max_size=3).map(repr),  # lists of the wrong things
)
rows = st.lists(st.tuples(text, raw_ground_truths), min_size=1, max_size=12)


def is_valid(question: str, raw: str) -> bool:
    import ast

    try:
        value = ast.literal_eval(raw)
    except Exception:  # noqa: BLE001 - anything literal_eval rejects is invalid
        return False
    return (
        bool(question.strip()) and isinstance(value, list) and bool(value)
        and all(isinstance(v, str) for v in value) and bool(value[0].strip())
        and control_character(question) is None and control_character(value[0]) is None
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_random_rows_never_crash_and_valid_answers_survive_unchanged(tmp_path, rows):
    import ast

    path = write_csv(tmp_path / "train.csv", rows)
    expected, seen = [], set()
    for question, raw in rows:
        if is_valid(question, raw):
            key = (question, ast.literal_eval(raw)[0])
            if key not in seen:
                seen.add(key)
                expected.append(key)
    if not expected:  # an empty split is an error, never an empty file
        with pytest.raises(FiqaDataError, match="holds no usable rows|data row"):
            read_split_csv(path, "train", on_bad_row="skip")
        return
    parsed = read_split_csv(path, "train", on_bad_row="skip")  # must not raise
    assert parsed.pairs == expected  # every valid row, answer byte for byte, in order
    assert len(parsed.pairs) + sum(parsed.skipped.values()) == len(rows)  # nothing dropped silently

    try:
        strict = read_split_csv(path, "train", on_bad_row="error")
    except FiqaDataError as exc:
        assert "data row" in str(exc)
    else:
        assert strict.pairs == expected and len(expected) == len(rows)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"question,ground_truths\n", "holds no usable rows"),
        ("question,ground_truths\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (b"question,question,ground_truths\nQ?,Q?,\"['a']\"\n", "names column(s) question more than once"),
        (b"question,ground_truths\nWhat?,\"['a']\",extra\n", "more field(s) than the header has columns"),
        (b"question,ground_truths\nmort\x00gage?,\"['a']\"\n", "control character '\\x00' in the question"),
        (b"question,ground_truths\nQ?,\"['an \x1b answer']\"\n", "control character '\\x1b' in the answer"),
    ],
    ids=["header only", "utf-16", "duplicate header", "extra field", "NUL", "ESC"],
)
def test_malformed_split_files_are_named(tmp_path, content, message):
    path = tmp_path / "dev.csv"
    path.write_bytes(content)
    with pytest.raises(FiqaDataError) as info:
        read_split_csv(path, "validation")
    assert message in str(info.value) and str(path) in str(info.value)


def test_a_utf8_bom_is_accepted_and_a_folder_is_named(tmp_path):
    path = write_csv(tmp_path / "test.csv", [GOOD])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_split_csv(path, "test").pairs == [(GOOD[0], "A bond is a loan.")]
    (tmp_path / "dev.csv").mkdir()
    with pytest.raises(FiqaDataError, match="is a folder, not a file"):
        read_split_csv(tmp_path / "dev.csv", "validation")
