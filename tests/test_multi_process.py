"""Two CPU processes (gloo) through `accelerate launch`: one set of files, the same loss as
one process with the same effective batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


def launch(work: Path, launcher: list[str], *overrides: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    python_path = os.pathsep.join([str(REPO_ROOT), *([str(extra_path)] if extra_path else [])])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": python_path,
           "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "-m", "recipes.run", SMOKE, *overrides]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)


# A test plugin that records, per rank, every file the run writes through os.replace (how the
# project writes its files atomically: metrics, charts, recipe.yaml, manifest, model card).
WRITE_AUDIT = """
import atexit
import os
from pathlib import Path

import torch.distributed

from plugins.base import RecipePlugin

_replace = os.replace
_rank = os.environ.get("RANK", "0")
_work = Path.cwd()
# What each process left open when it exited: the run ends with trainer.end(), as TRL's sft.py does.
atexit.register(lambda: (_work / f"group-at-exit-rank{_rank}.txt").write_text(str(torch.distributed.is_initialized())))


class WriteAudit(RecipePlugin):
    def on_recipe_parsed(self, recipe):
        log = Path(f"writes-rank{os.environ.get('RANK', '0')}.txt")

        def audited(src, dst, *args, **kwargs):
            with log.open("a") as handle:
                handle.write(f"{dst}\\n")
            return _replace(src, dst, *args, **kwargs)

        os.replace = audited
"""


def history(run: Path) -> list[dict]:
    return json.loads((run / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_effective_batch(tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "two" / "audit.py").write_text(WRITE_AUDIT)
    two = launch(tmp_path / "two", ["--config_file", str(REPO_ROOT / "accelerate_configs" / "cpu_multi_process.yaml")],
                 "--num_train_epochs", "2", "--plugins", "plugins.throughput.Throughput",
                 "plugins.loss_curves.LossCurves", "audit.WriteAudit", extra_path=tmp_path / "two")
    assert two.returncode == 0, two.stderr[-4000:]  # torch.distributed.run exits 0 only if both ranks did
    assert "world size 2; effective batch 8 examples (per device 4 x accumulation 1 x processes 2)" in two.stdout
    assert two.stdout.count("adapter saved to") == 1  # printed by the main process only
    main_writes = (tmp_path / "two" / "writes-rank0.txt").read_text().split()
    assert {"metrics.jsonl", "loss.png", "recipe.yaml", "run_manifest.json", "README.md"} <= {Path(w).name for w in main_writes}
    other = tmp_path / "two" / "writes-rank1.txt"
    assert not other.exists() or not other.read_text().split(), other.read_text()  # rank 1 wrote nothing
    for rank in (0, 1):  # both ranks closed the process group (trainer.end()) before exiting
        assert (tmp_path / "two" / f"group-at-exit-rank{rank}.txt").read_text() == "False"

    one = launch(tmp_path / "one", ["--config_file", str(REPO_ROOT / "accelerate_configs" / "cpu.yaml")],
                 "--num_train_epochs", "2", "--per_device_train_batch_size", "8")
    assert one.returncode == 0, one.stderr[-4000:]
    assert "world size 1; effective batch 8 examples" in one.stdout

    run_two, run_one = tmp_path / "two" / "runs" / "smoke", tmp_path / "one" / "runs" / "smoke"
    assert len(list(run_two.glob("adapter_model.safetensors"))) == 1
    rows = [json.loads(line) for line in (run_two / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps  # one writer: each logged step once

    losses_two = [h["loss"] for h in history(run_two) if "loss" in h]
    losses_one = [h["loss"] for h in history(run_one) if "loss" in h]
    assert len(losses_two) == len(losses_one)
    assert losses_two[0] == pytest.approx(losses_one[0], rel=1e-3)  # same examples, same weights
    for a, b in zip(losses_two, losses_one):
        assert a == pytest.approx(b, rel=3e-2)
    eval_two = json.loads((run_two / "all_results.json").read_text())["eval_loss"]
    eval_one = json.loads((run_one / "all_results.json").read_text())["eval_loss"]
    assert eval_two == pytest.approx(eval_one, rel=3e-2)


@pytest.mark.slow
def test_two_processes_checkpoint_on_sigterm_and_resume(tmp_path):
    from tests.test_reliability import FAULTS

    (tmp_path / "faults.py").write_text(FAULTS)
    config = ["--config_file", str(REPO_ROOT / "accelerate_configs" / "cpu_multi_process.yaml")]
    # 4 epochs of 38 rows at 2 x 4 per step: 20 steps. One rank signals itself at step 12.
    command = ["--num_train_epochs", "4", "--plugins", "plugins.loss_curves.LossCurves", "faults.Fault",
               "--fault", "term", "--fault_step", "12", "--save_steps", "10", "--eval_steps", "10"]
    env_path = os.pathsep.join([str(REPO_ROOT), str(tmp_path)])
    stopped = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", *config, "-m", "recipes.run", SMOKE, *command],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": env_path, "ACCELERATE_USE_CPU": "true",
             "OMP_NUM_THREADS": "1"},
    )
    assert stopped.returncode != 0 and "SIGTERM received" in stopped.stderr
    run = tmp_path / "runs" / "smoke"
    assert (run / "checkpoint-13" / "trainer_state.json").is_file()  # saved by both ranks together

    assert (tmp_path / "fault.done").is_file()  # the fault fired once; the same command now runs clean
    resumed = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", *config, "-m", "recipes.run", SMOKE, *command],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": env_path, "ACCELERATE_USE_CPU": "true",
             "OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming from" in resumed.stdout and "checkpoint-13" in resumed.stdout
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 20
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(2, 21, 2))
