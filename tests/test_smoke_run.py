"""The smoke recipe end to end through `accelerate launch`, in a subprocess, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT


def launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    # `python -m accelerate.commands.launch` is `accelerate launch` from this interpreter's environment.
    command = [sys.executable, "-m", "accelerate.commands.launch", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_smoke_recipe_trains_evaluates_and_saves(tmp_path):
    started = time.monotonic()
    result = launch(["-m", "recipes.run", str(REPO_ROOT / "recipes" / "smoke.yaml")], cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"smoke run through accelerate launch: {elapsed:.1f}s")

    out = tmp_path / "runs" / "smoke"  # the recipe's relative output_dir, under the working directory
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "recipe.yaml",
                 "all_results.json", "trainer_state.json", "data_report.json"):
        assert (out / name).is_file(), name
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 32 and adapter["peft_type"] == "LORA"

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(train_losses) >= 10 and len(eval_losses) >= 3
    first, last = sum(train_losses[:3]) / 3, sum(train_losses[-3:]) / 3
    assert last < 0.85 * first, f"training loss should fall on the learnable fixture: {first:.3f} -> {last:.3f}"
    assert eval_losses[-1] < eval_losses[0]

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] is not None
    assert state["best_metric"] == min(eval_losses[:-1])  # the last entry is the final re-evaluation
    final_eval = json.loads((out / "all_results.json").read_text())["eval_loss"]
    assert abs(final_eval - state["best_metric"]) < 1e-6  # the best checkpoint was loaded at the end

    resolved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert resolved["learning_rate"] == 1.0e-2 and resolved["output_dir"] == "runs/smoke"
    report = json.loads((out / "data_report.json").read_text())
    assert {r["split"] for r in report} == {"train", "validation"}
    assert "trainable parameters:" in result.stdout and "effective batch 4 examples" in result.stdout

    card = (out / "README.md").read_text()
    assert "base_model: runs/smoke-assets/tiny-llama" in card and "[None]" not in card
    assert "FiQA from `runs/smoke-assets/fiqa-csv` (train 38, validation 6, test 6 rows), `completion` prompt" in card
    assert f"| eval_loss | {round(final_eval, 4)} |" in card and "![training and validation loss](loss.png)" in card
    assert "| `learning_rate` | 0.01 |" in card
    assert resolved["recipe_name"] == "smoke"  # a rerun from runs/smoke/recipe.yaml keeps the name


def test_bad_recipe_through_python_m_exits_non_zero_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "recipes.run", str(REPO_ROOT / "recipes" / "smoke.yaml"), "--num_train_epoch", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "Did you mean `num_train_epochs`?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written before the recipe is valid
