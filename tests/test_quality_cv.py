"""Cross-validated quality (bench/quality_cv.py): folds that cover the pool once, tune slices that
never touch the held-out fold, resumable fold-by-fold runs, and the two gains of the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


def test_every_question_is_held_out_exactly_once_and_never_chosen_on():
    from bench.quality_cv import fold_splits

    splits = fold_splits(332, 5, tune_questions=40, seed=0)
    held = [i for s in splits for i in s["heldout"]]
    assert sorted(held) == list(range(332))  # each question answered by exactly one fold's model
    assert {len(s["heldout"]) for s in splits} == {66, 67}
    for s in splits:
        assert len(s["tune"]) == 40 and len(s["train"]) == 332 - len(s["heldout"]) - 40
        assert not set(s["tune"]) & set(s["heldout"]) and not set(s["train"]) & set(s["heldout"])
        assert not set(s["tune"]) & set(s["train"])
    assert fold_splits(332, 5, 40, seed=0) == splits  # a fixed draw: every rerun and call sees the same folds
    assert fold_splits(332, 5, 40, seed=1) != splits
    with pytest.raises(SystemExit, match="--tune_questions"):
        fold_splits(332, 5, tune_questions=300)


def test_learning_curve_points_train_on_nested_subsets_of_the_same_fold():
    from bench.quality_cv import fold_splits

    full = fold_splits(332, 5, 40)
    small, large = fold_splits(332, 5, 40, train_rows=50), fold_splits(332, 5, 40, train_rows=200)
    for f, s, l in zip(full, small, large):
        assert s["heldout"] == l["heldout"] == f["heldout"] and s["tune"] == f["tune"]
        assert len(s["train"]) == 50 and set(s["train"]) < set(l["train"]) < set(f["train"])
    with pytest.raises(SystemExit, match="--train_rows"):
        fold_splits(332, 5, 40, train_rows=1000)


def test_the_best_decoding_is_the_one_with_the_highest_mean_similarity():
    from bench.quality_cv import choose

    assert choose({"greedy": [0.4, 0.4], "rp1.2": [0.5, 0.45], "norepeat4": [0.1, 0.9]}) == "norepeat4"
    assert choose({"greedy": [0.4], "rp1.2": [0.4]}) == "greedy"  # a tie keeps the plainer decoding


@pytest.mark.slow
def test_cross_validation_runs_fold_by_fold_and_reports_both_gains(tmp_path, fiqa_csv_dir, tiny_model_dir):
    from bench.quality_cv import main

    # A learning rate of 1e-9 trains nothing: the tuned model must answer exactly as the base does, so
    # both gains are exactly 0, whatever decoding each side chose.
    recipe = (f"{SMOKE} --build_smoke_assets false --num_train_epochs 1 --eval_strategy epoch "
              "--save_strategy epoch --max_length 256 --learning_rate 1e-9")
    work = tmp_path / "work"
    common = ["run", "--model", "smollm2", "--model_dir", str(tiny_model_dir), "--source", str(fiqa_csv_dir),
              "--work", str(work), "--recipe", recipe, "--folds", "3", "--tune_questions", "4",
              "--max_new_tokens", "8", "--batch_size", "16"]
    assert main([*common, "--only_folds", "0"]) == 0
    first = (work / "folds/0/fold.json").stat().st_mtime_ns
    assert not (work / "folds/1/fold.json").exists()
    assert len(list((work / "base").glob("*.jsonl"))) == 3  # the base model answers the pool once per decoding
    assert main(common) == 0  # carries on: folds 1 and 2, fold 0 kept as it was
    assert (work / "folds/0/fold.json").stat().st_mtime_ns == first

    out = tmp_path / "cv.json"
    assert main(["score", "--work", str(work), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    pool = len((work / "data-completion/pool.jsonl").read_text().splitlines())
    report = result["report"]
    assert report["questions"] == pool and report["folds_done"] == 3
    assert sum(f["questions"] for f in result["folds"]) == pool
    for gain in ("gain_same_decoding", "gain_vs_best_base"):
        assert report[gain]["mean"] == 0 and report[gain]["ci95"] == [0, 0]
    assert report["heldout_loss"]["change"] == pytest.approx(0, abs=1e-3)
    assert result["targets_met"]["gain_vs_best_base 95% CI above 0"] is False
    assert set(result["similarity_by_decoding"]["base"]) == {"greedy", "rp1.2", "norepeat4"}

    # The comparison file (learning-curve points, settings) scores the same work folder the same way.
    compared = tmp_path / "curve.json"
    assert main(["curve", "--work", str(work), "--out", str(compared)]) == 0
    [row] = json.loads(compared.read_text())["works"]
    assert row["questions"] == pool and row["folds_done"] == 3
    assert row["gain_vs_best_base"] == report["gain_vs_best_base"] and row["heldout_loss"] == report["heldout_loss"]


def test_learning_curve_collects_each_folds_heldout_loss_by_training_rows(tmp_path):
    from bench.quality_cv import main

    def fold(work: Path, rows: int, tuned: float) -> Path:
        (work / "folds" / "0").mkdir(parents=True)
        (work / "folds" / "0" / "fold.json").write_text(json.dumps({
            "fold": 0, "train_rows": rows, "optimizer_steps": rows // 8 * 3, "hardware": "test CPU",
            "heldout_losses": {"base": {"eval_loss": 3.0}, "tuned": {"eval_loss": tuned}}}))
        return work

    works = [fold(tmp_path / "full", 225, 2.8), fold(tmp_path / "small", 50, 2.95)]
    out = tmp_path / "curve.json"
    assert main(["curve", "--work", *map(str, works), "--out", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    assert [p["train_rows"] for p in points] == [50, 225]  # ordered by rows within a fold
    assert [p["change"] for p in points] == [pytest.approx(-0.0167, abs=1e-4), pytest.approx(-0.0667, abs=1e-4)]
    by_rows = json.loads(out.read_text())["loss_change_by_rows"]
    assert [m["train_rows"] for m in by_rows["mean_change"]] == [50, 225] and by_rows["folds"] == [0]
    [step] = by_rows["change_per_doubling"]  # -5 points over log2(4.5) = 2.17 doublings
    assert step["change"] == pytest.approx((-0.0667 + 0.0167) / 2.1699, abs=1e-3)
