"""``datasets:``: several sources in one recipe, each checked, weighted and recorded."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def _write_faq(path: Path, rows: int = 12) -> Path:
    lines = [{"q": f"What does fee number {i} cost a saver?", "a": f"Fee {i} costs about {i} dollars a year."}
             for i in range(rows)]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines), encoding="utf-8")
    return path


def _parse(tmp_path, *overrides: str):
    from recipekit.config.parse import parse_recipe

    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        return parse_recipe([str(REPO_ROOT / "recipes" / "smoke.yaml"), *overrides])
    finally:
        os.chdir(previous)


@pytest.mark.slow
def test_a_recipe_with_two_sources_one_weighted_trains_and_records_both(tmp_path, fiqa_jsonl_dir, tiny_model_dir):
    faq = _write_faq(tmp_path / "my_faq.jsonl")
    recipe = tmp_path / "mixed.yaml"
    smoke = (REPO_ROOT / "recipes" / "smoke.yaml").read_text()
    recipe.write_text(smoke + f"\ndatasets:\n  - path: {fiqa_jsonl_dir}\n  - path: {faq}\n"
                      "    columns: {question: q, answer: a}\n    weight: 0.25\n")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        from recipekit.config.parse import parse_recipe
        from recipekit.training.trainer import train

        train(parse_recipe([str(recipe), "--build_smoke_assets", "false", "--model_name_or_path", str(tiny_model_dir),
                            "--num_train_epochs", "1"]))
    finally:
        os.chdir(previous)
    manifest = json.loads((tmp_path / "runs" / "smoke" / "run_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["prompt_format"] == "completion"
    fiqa_rows = sum(1 for line in (fiqa_jsonl_dir / "train.jsonl").read_text().splitlines() if line.strip())
    fiqa, mine = (manifest["data"][f"train source {i} ({p})"] for i, p in ((1, fiqa_jsonl_dir), (2, faq)))
    assert fiqa["rows"] == fiqa_rows and fiqa["rows_used"] == fiqa_rows and fiqa["weight"] is None
    # A share of 0.25 beside the FiQA rows: FiQA is 75% of the mixture, so the FAQ gives a third of FiQA's rows.
    assert mine["rows"] == 12 and mine["weight"] == 0.25 and mine["rows_used"] == round(fiqa_rows / 3)
    from recipekit.rundir.manifest import sha256_of

    assert mine["sha256"] == sha256_of(faq) and len(fiqa["sha256"]) == 64
    assert any(key.startswith("validation source 1") for key in manifest["data"])


def test_rows_wanted_counts_shares_of_the_whole_mixture_and_row_counts():
    from recipekit.training.sources import rows_wanted

    assert rows_wanted([300, 50], [None, 0.25]) == [300, 100]  # upsampled: 100 of 400
    assert rows_wanted([300, 50, 1000], [None, 20, 0.5]) == [300, 20, 320]
    assert rows_wanted([100, 100], [0.75, 0.25]) == [150, 50]


def test_take_rows_repeats_every_row_before_any_row_twice():
    from datasets import Dataset

    from recipekit.training.sources import take_rows

    data = Dataset.from_list([{"i": i} for i in range(5)])
    taken = [r["i"] for r in take_rows(data, 12, seed=1)]
    assert sorted(taken[:5]) == list(range(5)) and sorted(taken[5:10]) == list(range(5)) and len(taken) == 12


def test_a_csv_source_is_read_in_the_recipes_prompt_format(tmp_path):
    from preprocess.prompt_format import build_messages
    from recipekit.training.sources import DataSource, read_source

    path = tmp_path / "faq.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "reply"])
        writer.writerow(["Is gold a hedge?", "Sometimes, against currency risk."])
    examples = read_source(DataSource(str(path), columns={"question": "question", "answer": "reply"}), "chat")
    assert examples == [{"prompt": build_messages("Is gold a hedge?", "chat"),
                         "completion": [{"role": "assistant", "content": "Sometimes, against currency risk."}]}]


@pytest.mark.parametrize("content, expected", [
    ('{"q": "ok?", "a": "yes"}\n{"q": "empty answer", "a": "  "}\n', "faq.jsonl, line 2: the answer (`a`) is empty"),
    ('{"q": "ok?", "a": "yes"}\n{"q": "torn", "a": "\n', "faq.jsonl, line 2: not a JSON object"),
    ('{"question": "ok?", "answer": "yes"}\n', "faq.jsonl, line 1: no column `q`"),
    ('{"q": "ok?", "a": ["one", "two"]}\n', "faq.jsonl, line 1: the answer (`a`) is list, not text"),
    ('{"q": null, "a": "yes"}\n', "faq.jsonl, line 1: the question (`q`) is empty"),
])
def test_a_bad_row_is_named_by_file_and_line(tmp_path, content, expected):
    from recipekit.errors import RecipeError
    from recipekit.training.sources import DataSource, read_source

    path = tmp_path / "faq.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecipeError) as error:
        read_source(DataSource(str(path), columns={"question": "q", "answer": "a"}), "completion")
    assert expected in str(error.value)


@pytest.mark.parametrize("key", ["dataset_name", "dataset_train_split", "dataset_config"])
def test_trl_data_keys_point_to_datasets(tmp_path, key):
    from recipekit.errors import RecipeError

    with pytest.raises(RecipeError) as error:
        _parse(tmp_path, f"--{key}", "explodinggradients/fiqa")
    message = str(error.value)
    assert "datasets:" in message and "Did you mean" not in message


@pytest.mark.parametrize("entries, expected", [
    ("[{path: a.jsonl, weight: 1.5}]", "a whole number of rows"),
    ("[{path: a.jsonl, wieght: 2}]", "unknown key `wieght`"),
    ("[{path: a.jsonl, weight: 0.5}, {path: b.jsonl, weight: 0.2}]", "add up to 0.7, not 1"),
    ("[{path: a.jsonl, columns: {text: t}}]", "map the row's columns"),
    ("[{path: missing.jsonl}]", "does not exist"),
    ("[{path: org/some-qa-dataset, split: train}]", "would be read from the Hugging Face Hub, and HF_HUB_OFFLINE"),
])
def test_malformed_sources_are_refused_before_loading(tmp_path, entries, expected):
    import yaml

    from recipekit.errors import RecipeError

    recipe = tmp_path / "r.yaml"
    content = yaml.safe_load((REPO_ROOT / "recipes" / "smoke.yaml").read_text())
    content.update(build_smoke_assets=False, eval_strategy="no", load_best_model_at_end=False,
                   datasets=yaml.safe_load(entries))
    recipe.write_text(yaml.safe_dump(content))
    (tmp_path / "a.jsonl").write_text('{"question": "q?", "answer": "a"}\n')
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        from recipekit.config.parse import parse_recipe

        with pytest.raises(RecipeError) as error:
            parse_recipe([str(recipe)])
    finally:
        os.chdir(previous)
    assert expected in str(error.value)


def test_data_dir_alone_is_the_one_source_case(tmp_path):
    recipe = _parse(tmp_path, "--data_dir", "some/folder")
    from recipekit.training.sources import recipe_sources

    assert [s.path for s in recipe_sources(recipe.recipe)] == ["some/folder"]
