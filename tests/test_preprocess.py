"""preprocess.fiqa on a fixture the project writes: format, answers, counts, manifest, atomicity."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from preprocess.fiqa import main, preprocess
from preprocess.fiqa_source import FiqaDataError
from preprocess.fixture import fixture_rows, long_answer

# Spelled out here, not imported, so a change to the template is a visible test change.
EXPECTED_SYSTEM = (
    "You are a helpful financial assistant. Provide comprehensive, detailed answers to financial "
    "questions. Include relevant context, examples, and explanations when appropriate."
)
SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompt_plus_completion_is_the_documented_text(fiqa_jsonl_dir):
    rows = fixture_rows()
    for split in SPLITS:
        records = read_jsonl(fiqa_jsonl_dir / f"{split}.jsonl")
        assert len(records) == len(rows[split])
        for record, (question, ground_truths) in zip(records, rows[split]):
            answer = ground_truths[0]
            assert record["prompt"] == f"{EXPECTED_SYSTEM}\n\nQuestion: {question}\n\nAnswer:"
            assert record["prompt"] + record["completion"] == (
                f"{EXPECTED_SYSTEM}\n\nQuestion: {question}\n\nAnswer: {answer}"
            )
            assert record["question"] == question
            assert record["answer"] == answer


def test_first_ground_truth_is_used_in_full(fiqa_jsonl_dir):
    records = read_jsonl(fiqa_jsonl_dir / "train.jsonl")
    by_question = {r["question"]: r["answer"] for r in records}
    long = by_question["How should I plan my whole investment life?"]
    assert long == long_answer() and len(long.split()) > 300
    tricky = by_question['Which risk matters for "safe" investing, and why?']
    assert tricky.startswith('It depends: "risk" means') and "(€, £ or $)" in tricky
    assert "Short: all of them." not in tricky  # the second ground truth is not used


def test_manifest_counts_hashes_and_lengths(fiqa_jsonl_dir, fiqa_csv_dir):
    manifest = json.loads((fiqa_jsonl_dir / "manifest.json").read_text())
    rows = fixture_rows()
    assert manifest["source"] == str(fiqa_csv_dir)
    assert manifest["system_prompt"] == EXPECTED_SYSTEM
    assert manifest["format"] == "completion"
    for split, info in manifest["splits"].items():
        blob = (fiqa_jsonl_dir / info["file"]).read_bytes()
        assert info["rows"] == len(rows[split])
        assert info["rows_skipped"] == 0 and info["skipped_by_reason"] == {}
        assert info["sha256"] == hashlib.sha256(blob).hexdigest()
        words = sorted(len(gt[0].split()) for _, gt in rows[split])
        stats = info["answer_length"]
        assert stats["mean_words"] == pytest.approx(sum(words) / len(words), abs=0.05)
        assert stats["share_under_100"] + stats["share_100_300"] + stats["share_300_plus"] == pytest.approx(1, abs=1e-3)
    assert manifest["splits"]["train"]["answer_length"]["share_300_plus"] > 0  # the long answer


def test_rerun_writes_identical_bytes(tmp_path, fiqa_csv_dir):
    first, second = tmp_path / "a", tmp_path / "b"
    preprocess(first, source_dir=fiqa_csv_dir)
    preprocess(second, source_dir=fiqa_csv_dir)
    preprocess(second, source_dir=fiqa_csv_dir)  # over its own output
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_chat_format_writes_messages(tmp_path, fiqa_csv_dir):
    preprocess(tmp_path, source_dir=fiqa_csv_dir, prompt_format="chat")
    record = read_jsonl(tmp_path / "test.jsonl")[0]
    question, ground_truths = fixture_rows()["test"][0]
    assert record["prompt"] == [
        {"role": "system", "content": EXPECTED_SYSTEM},
        {"role": "user", "content": question},
    ]
    assert record["completion"] == [{"role": "assistant", "content": ground_truths[0]}]
    assert json.loads((tmp_path / "manifest.json").read_text())["format"] == "chat"


def copy_with_bad_dev_row(src: Path, dst: Path, bad_ground_truths: str) -> Path:
    dst.mkdir()
    for name in ("train.csv", "test.csv"):
        (dst / name).write_bytes((src / name).read_bytes())
    rows = list(csv.reader((src / "dev.csv").open(encoding="utf-8", newline="")))
    rows.insert(3, ["A broken row?", bad_ground_truths])
    with (dst / "dev.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return dst


def test_bad_row_stops_the_run_and_writes_nothing(tmp_path, fiqa_csv_dir, capsys):
    source = copy_with_bad_dev_row(fiqa_csv_dir, tmp_path / "src", "['unclosed")
    out = tmp_path / "out"
    with pytest.raises(FiqaDataError, match=r"dev.csv, data row 3 .*not a Python list literal.*--on-bad-row skip"):
        preprocess(out, source_dir=source)
    assert not out.exists() or not any(out.iterdir())

    assert main(["--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_skip_policy_counts_bad_rows(tmp_path, fiqa_csv_dir):
    source = copy_with_bad_dev_row(fiqa_csv_dir, tmp_path / "src", "[]")
    manifest = preprocess(tmp_path / "out", source_dir=source, on_bad_row="skip")
    info = manifest["splits"]["validation"]
    assert info["rows"] == len(fixture_rows()["validation"])
    assert info["rows_skipped"] == 1
    assert info["skipped_by_reason"] == {"ground_truths is an empty list": 1}


def test_missing_split_file_is_named(tmp_path, fiqa_csv_dir, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.csv").write_bytes((fiqa_csv_dir / "train.csv").read_bytes())
    assert main(["--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "dev.csv, test.csv" in err and "Traceback" not in err


def test_hub_route_downloads_the_csvs_and_parses_them_like_a_local_copy(tmp_path, fiqa_csv_dir, monkeypatch):
    """The hub route asks huggingface_hub for the dataset's CSV files; here they come from a local copy."""
    import huggingface_hub

    requested = []

    def fake_download(repo_id, filename, repo_type=None, revision=None, **kwargs):
        requested.append((repo_id, repo_type, filename, revision))
        return str(fiqa_csv_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    hub_manifest = preprocess(tmp_path / "hub")
    local_manifest = preprocess(tmp_path / "local", source_dir=fiqa_csv_dir)

    assert requested == [
        ("explodinggradients/fiqa", "dataset", "train.csv", None),
        ("explodinggradients/fiqa", "dataset", "dev.csv", None),
        ("explodinggradients/fiqa", "dataset", "test.csv", None),
    ]
    assert hub_manifest["source"] == "hf://datasets/explodinggradients/fiqa"
    assert hub_manifest["splits"] == local_manifest["splits"]
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl"):
        assert (tmp_path / "hub" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_hub_route_offline_gives_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "explodinggradients/fiqa" in err and "--source DIR" in err and "Traceback" not in err
