"""``recipes.run RECIPE --plan``: what a run would take, printed without training or writing a run.

The smoke recipe's plan is held against the trainer itself (its prepared dataset and its step
count); a Nemotron recipe, whose tokenizer cannot be fetched here, gets an estimate that says
so and the measured figures of its committed benchmark row.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recipes.run import main
from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")
QLORA = str(REPO_ROOT / "recipes" / "nemotron_fiqa_qlora.yaml")
CHAT_QLORA = str(REPO_ROOT / "recipes" / "nemotron_fiqa_chat_qlora.yaml")


@pytest.fixture(scope="module")
def smoke_work(tmp_path_factory) -> Path:
    """A working folder where the smoke recipe's relative paths (runs/smoke-assets) resolve, assets built."""
    from recipekit.training.smoke_assets import ensure_smoke_assets

    work = tmp_path_factory.mktemp("plan-smoke")
    ensure_smoke_assets(work / "runs" / "smoke-assets" / "tiny-llama", work / "runs" / "smoke-assets" / "fiqa")
    return work


def plan(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main([*argv, "--plan"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def number(pattern: str, text: str) -> int:
    found = re.search(pattern, " ".join(text.split()))  # the plan wraps its lines
    assert found, f"{pattern!r} not in:\n{text}"
    return int(found.group(1).replace(",", ""))


def trainer_sees(argv: list[str], output_dir: Path) -> tuple[int, int, int]:
    """(sequences, tokens, max_steps) of the trainer the run would build, from the trainer itself."""
    from recipekit.config.parse import parse_recipe
    from recipekit.training.trainer import build_trainer

    trainer, _ = build_trainer(parse_recipe([*argv, "--output_dir", str(output_dir)]))
    dataset = trainer.train_dataset
    max_steps = trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]
    return len(dataset), sum(len(ids) for ids in dataset["input_ids"]), max_steps


@pytest.mark.parametrize("overrides", [[], ["--packing", "true", "--max_length", "384",
                                            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2"]],
                         ids=["unpacked", "packed"])
def test_the_smoke_plan_counts_what_the_trainer_trains(smoke_work, overrides, capsys, monkeypatch):
    monkeypatch.chdir(smoke_work)
    out_dir = smoke_work / "planned-run"
    status, out, err = plan([SMOKE, "--output_dir", str(out_dir), *overrides], capsys)
    assert status == 0, err
    assert not out_dir.exists()  # no run, lock or manifest
    assert "ESTIMATE" not in out  # the smoke model's own tokenizer counted the tokens

    sequences, tokens, max_steps = trainer_sees([SMOKE, *overrides], smoke_work / "trainer-run")
    unit = "packs" if overrides else "examples"
    assert number(rf"([\d,]+) {unit}(?: of up to \d+ tokens)? an epoch", out) == sequences
    assert number(r"([\d,]+) tokens an epoch", out) == tokens
    assert number(r"([\d,]+) in all", out) == max_steps
    assert number(r"([\d,]+) training examples", out) == 38
    assert "not measured for this recipe" in out  # no benchmark row measures the tiny model
    assert re.search(r"adapter [\d,]+ trainable parameters", out)


def test_a_nemotron_plan_estimates_its_tokens_and_cites_its_measured_row(fiqa_jsonl_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU machine's wording (no GPU visible)")
    out_dir = tmp_path / "qlora-run"
    status, out, err = plan([QLORA, "--data_dir", str(fiqa_jsonl_dir), "--output_dir", str(out_dir),
                             "--gpu_hour_price", "2.5"], capsys)
    assert status == 0, err
    assert not out_dir.exists()
    flat = " ".join(out.split())
    assert "ESTIMATE, not tokenized" in flat and "tokens/word" in flat and "tokens_per_word_" in flat
    assert "no GPU visible here" in flat
    row = "bench/results/throughput_round9_h100_2026-12-07.json, row `nemotron_fiqa_qlora`, NVIDIA H100 80GB HBM3, 2026-12-07"
    assert row in flat
    report = json.loads((REPO_ROOT / "bench/results/throughput_round9_h100_2026-12-07.json").read_text())
    measured = next(r for r in report["results"] if r["name"] == "nemotron_fiqa_qlora")
    assert f"{measured['tokens_per_second']:,.0f} tok/s" in flat and f"{measured['peak_allocated_gib']} GiB" in flat
    assert "cost:" in flat and "per GPU hour" in flat
    assert "checkpoint size not known" in flat  # the model's config cannot be read offline


def test_a_recipe_without_its_own_row_is_not_measured_and_says_which_row_is_nearest(tmp_path, fiqa_csv_dir, capsys):
    from preprocess.fiqa import preprocess

    data = tmp_path / "nemotron-chat"
    preprocess(data, source_dir=fiqa_csv_dir, prompt_format="nemotron-chat")
    status, out, err = plan([CHAT_QLORA, "--data_dir", str(data), "--output_dir", str(tmp_path / "run")], capsys)
    assert status == 0, err
    flat = " ".join(out.split())
    assert "not measured for this recipe: no row in bench/results is named `nemotron_fiqa_chat_qlora`" in flat
    assert "Nearest measured row, for reference only" in flat and "row `nemotron_fiqa_qlora`" in flat
    assert not (tmp_path / "run").exists()


def test_a_setting_that_changes_speed_makes_a_row_not_the_recipes(tmp_path, smoke_work, monkeypatch):
    """A row counts only when it ran the recipe's settings; the differences are named, the schedule is not one."""
    from recipekit.config.parse import parse_recipe
    from recipekit.planning import measured

    monkeypatch.chdir(smoke_work)
    recipe = parse_recipe([SMOKE], check_environment=False)
    row = {"name": "smoke", "tokens_per_second": 1234.5, "peak_allocated_gib": 1.5, "peak_reserved_gib": 2.0,
           "gpu": "NVIDIA H200", "settings": {**recipe.resolved, "learning_rate": 0.5, "max_steps": 20}}
    report = {"date": "2026-12-01", "shape": "tiny", "results": [row]}
    (tmp_path / "throughput_x.json").write_text(json.dumps(report))
    monkeypatch.setattr(measured, "MODEL_OF_SHAPE", {"tiny": recipe.model.model_name_or_path})

    found = measured.find_measurements(recipe, results_dir=tmp_path)
    assert [m.tokens_per_second for m in found.rows] == [1234.5]

    slower = parse_recipe([SMOKE, "--max_length", "256"], check_environment=False)
    found = measured.find_measurements(slower, results_dir=tmp_path)
    assert found.rows == [] and found.nearest is not None
    assert found.differences == ["max_length: recipe 256, measured 512"]


@pytest.mark.parametrize("argv, expected", [
    (["--plan", "--gpu_hour_price", "cheap"], "`--gpu_hour_price` needs the price of one GPU hour"),
    (["--plan", "--gpu_hour_price", "-1"], "`--gpu_hour_price` needs the price of one GPU hour"),
    (["--plan", "--gpu_hour_price"], "but got nothing"),
    (["--gpu_hour_price", "2.5"], "add `--plan`"),
    (["--plan", "--lora_rank", "8"], "unknown key `lora_rank`"),
])
def test_a_bad_plan_request_is_one_paragraph_and_exit_2(argv, expected, tmp_path, capsys):
    status = main([SMOKE, "--output_dir", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_card_is_predicted_for_only_by_its_own_rows_and_its_free_memory_decides_the_fit():
    from recipekit.planning.footprint import GIB, VisibleGpu
    from recipekit.planning.measured import Lookup, Measurement
    from recipekit.planning.report import memory_line, time_lines
    from recipekit.planning.workload import Workload

    work = Workload(examples=100, left_out=0, tokens_per_epoch=36_000_000, sequences_per_epoch=4700, unit="packs",
                    steps_per_epoch=4700, max_steps=4700, world_size=1, estimate=None)
    row = Measurement(file="throughput_x.json", date="2026-11-30", name="r", gpu="NVIDIA H200",
                      tokens_per_second=10_000.0, peak_allocated_gib=37.9, peak_reserved_gib=38.7)
    lookup = Lookup(rows=[row])

    same = VisibleGpu("NVIDIA H200", int(140 * GIB), int(141 * GIB))
    lines, seconds = time_lines(work, lookup, same)
    assert lines[0].startswith("time:    60.0 min predicted of training") and seconds == (3600.0, 3600.0)
    assert "fits, 101.3 GiB to spare" in memory_line(lookup, same)

    other = VisibleGpu("NVIDIA H100 80GB HBM3", int(30 * GIB), int(80 * GIB))
    lines, _ = time_lines(work, lookup, other)
    assert "not measured for this GPU (NVIDIA H100 80GB HBM3)" in lines[0] and "predicted" not in lines[0]
    assert "does NOT fit, 8.7 GiB short (by another GPU's figure)" in memory_line(lookup, other)

    lines, _ = time_lines(work, lookup, None)
    assert "no GPU visible here" in lines[0]


def test_a_tokenizer_that_loads_but_refuses_the_recipe_is_an_error_not_an_estimate(smoke_work, tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.chdir(smoke_work)
    status, out, err = plan([SMOKE, "--output_dir", str(tmp_path / "run"), "--pad_token", "<|no_such_token|>"], capsys)
    assert status == 2 and out == ""
    assert err.startswith("error: pad_token '<|no_such_token|>' is not in the vocabulary")
