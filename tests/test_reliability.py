"""Interruption and guards: kill -9 then the same command, SIGTERM, a NaN loss, the overwrite
guard, and the provenance manifest. Each fault is injected by a user plugin at a chosen step."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recipekit.config.parse import parse_recipe
from recipekit.errors import RecipeError
from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")

FAULTS = textwrap.dedent(
    '''
    """Faults injected once at a given step (a marker file makes the rerun of the same command clean)."""
    import math
    import os
    import signal
    from dataclasses import dataclass
    from pathlib import Path

    from transformers import TrainerCallback

    from plugins.base import RecipePlugin


    @dataclass
    class FaultConfig:
        fault: str = "kill"     # kill (SIGKILL), term (SIGTERM) or nan (poison a LoRA weight)
        fault_step: int = 25
        fault_marker: str = "fault.done"


    class _Fault(TrainerCallback):
        def __init__(self, config, trainer_ref):
            self.config, self.trainer_ref = config, trainer_ref

        def on_step_end(self, args, state, control, **kwargs):
            marker = Path(self.config.fault_marker)
            if state.global_step != self.config.fault_step or marker.exists():
                return
            marker.write_text("done")
            if self.config.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.config.fault == "term":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                model = self.trainer_ref[0].model
                weight = next(p for n, p in model.named_parameters() if "lora_A" in n)
                weight.data.fill_(math.nan)


    class Fault(RecipePlugin):
        config_class = FaultConfig

        def __init__(self, config=None):
            super().__init__(config)
            self.trainer_ref = []

        def callbacks(self, recipe):
            return [_Fault(self.config, self.trainer_ref)]

        def on_trainer_ready(self, trainer, recipe):
            self.trainer_ref.append(trainer)
    '''
)
PLUGINS = ["plugins.throughput.Throughput", "plugins.loss_curves.LossCurves", "faults.Fault"]


def run_smoke(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(work)])}
    return subprocess.run([sys.executable, "-m", "recipes.run", SMOKE, "--plugins", *PLUGINS, *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)


def train_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if r["kind"] == "train"]


@pytest.fixture
def work(tmp_path) -> Path:
    (tmp_path / "faults.py").write_text(FAULTS)
    return tmp_path


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_and_finishes(work):
    command = ["--fault", "kill", "--fault_step", "25"]
    killed = run_smoke(work, *command)
    assert killed.returncode == -signal.SIGKILL
    run = work / "runs" / "smoke"
    assert json.loads((run / "run_manifest.json").read_text())["status"] == "running"

    again = run_smoke(work, *command)  # the very same command
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {Path('runs/smoke/checkpoint-20')}" in again.stdout
    assert train_steps(run) == list(range(2, 61, 2))  # each logged step once
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 60
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed_from"].endswith("checkpoint-20")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(work):
    command = ["--fault", "term", "--fault_step", "25"]
    stopped = run_smoke(work, *command)
    assert stopped.returncode == 143
    # The signal lands at the end of step 25, after the preemption check of that step: the
    # run stops at the end of the next step, as it would for a signal arriving mid-step.
    assert "SIGTERM received: stopped at step 26" in stopped.stderr and "Traceback" not in stopped.stderr
    run = work / "runs" / "smoke"
    assert (run / "checkpoint-26" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoint-26" / "trainer_state.json").is_file()
    assert json.loads((run / "run_manifest.json").read_text())["status"] == "preempted"

    resumed = run_smoke(work, *command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "checkpoint-26" in resumed.stdout
    assert train_steps(run) == list(range(2, 61, 2))


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(work):
    stopped = run_smoke(work, "--fault", "nan", "--fault_step", "13")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "the training loss became NaN or infinite at step 14" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    run = work / "runs" / "smoke"
    assert "checkpoint-10" in stopped.stderr
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-10"]  # nothing saved after the NaN
    assert not (run / "adapter_model.safetensors").exists()  # no final adapter from broken weights
    assert json.loads((run / "run_manifest.json").read_text())["status"] == "stopped: non-finite loss"
    steps = train_steps(run)
    assert max(steps) == 14 and all(r <= 12 for r in steps[:-1])  # the NaN step is logged, as NaN, and is the last
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["kind"] == "train"][-1]
    assert last["step"] == 14 and not math.isfinite(last["loss"])


def test_a_finished_run_is_not_overwritten_unless_asked(tmp_path):
    run = tmp_path / "finished"
    run.mkdir()
    (run / "run_manifest.json").write_text(json.dumps({"status": "finished"}))
    (run / "checkpoint-5").mkdir()
    with pytest.raises(RecipeError, match="holds a finished run.*overwrite_output_dir: true"):
        parse_recipe([SMOKE, "--output_dir", str(run), "--overwrite_output_dir", "false"])
    recipe = parse_recipe([SMOKE, "--output_dir", str(run), "--overwrite_output_dir", "true"])
    assert recipe.recipe.overwrite_output_dir is True


def write_checkpoint(folder: Path, state: str | None = None) -> Path:
    """A small checkpoint written as the Trainer writes one: weights, optimizer archive, state last
    (by default the state of the step the folder is named after)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"lora_A": torch.ones(4, 8)}, str(folder / "adapter_model.safetensors"))
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    step = folder.name.rsplit("-", 1)[-1]
    (folder / "trainer_state.json").write_text(state or f'{{"global_step": {int(step) if step.isdigit() else 1}}}')
    return folder


def test_resuming_into_another_lora_rank_is_refused_before_the_model_loads(tmp_path):
    """A checkpoint's LoRA matrices have its rank's shape: another `lora_r` cannot load them, even with
    `resume_despite_changes` (which covers settings that change the training, not the shapes)."""
    from recipekit.config.parse import parse_recipe
    from recipekit.errors import RecipeError
    from recipekit.training.trainer import check_resume_matches

    checkpoint = write_checkpoint(tmp_path / "run" / "checkpoint-10")
    (checkpoint / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 32, "peft_type": "LORA"}))
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"model_name_or_path: m\nbf16: false\noutput_dir: {tmp_path / 'run'}\n"
                           f"resume_from_checkpoint: {checkpoint}\nresume_despite_changes: true\n")
    check_resume_matches(parse_recipe([str(recipe_file), "--lora_r", "8"], check_environment=False))
    with pytest.raises(RecipeError) as refused:
        check_resume_matches(parse_recipe([str(recipe_file), "--lora_r", "16"], check_environment=False))
    assert "holds a LoRA adapter of rank 8, and this recipe trains rank 16" in str(refused.value)
    assert "--lora_r 8" in str(refused.value)


def test_resume_auto_picks_the_newest_complete_checkpoint(tmp_path):
    from recipekit.rundir.checkpoints import resolve_resume

    for step, complete in ((10, True), (20, True), (30, False)):
        folder = write_checkpoint(tmp_path / f"checkpoint-{step}")
        if not complete:
            (folder / "trainer_state.json").unlink()
    assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-20")  # 30 was cut short
    assert resolve_resume("auto", tmp_path / "empty") is None
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume(str(tmp_path / "checkpoint-10"), tmp_path) == str(tmp_path / "checkpoint-10")


@pytest.mark.slow
def test_a_checkpoint_due_between_two_logs_is_not_written_from_broken_weights(work):
    """Logs at steps 7 and 14, checkpoints every 10: the NaN of step 9 is not logged before step 10's
    checkpoint, so the guard checks the weights a checkpoint would hold."""
    stopped = run_smoke(work, "--fault", "nan", "--fault_step", "8", "--logging_steps", "7")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "the training loss became NaN or infinite at step 10" in stopped.stderr
    run = work / "runs" / "smoke"
    assert not list(run.glob("checkpoint-*")) and not (run / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_run_manifest_records_provenance(work):
    finished = run_smoke(work, "--fault", "kill", "--fault_step", "999")
    assert finished.returncode == 0, finished.stderr[-3000:]
    run = work / "runs" / "smoke"
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["started_at"] <= manifest["ended_at"]
    assert manifest["recipe"]["learning_rate"] == 0.01 and manifest["recipe_name"] == "smoke"
    from importlib.metadata import version

    assert manifest["packages"]["trl"] == version("trl") and manifest["packages"]["torch"] == version("torch")
    train_file = work / "runs" / "smoke-assets" / "fiqa" / "train.jsonl"
    assert manifest["data"]["train"]["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert manifest["hardware"]["world_size"] == 1 and manifest["hardware"]["cpu_count"] >= 1
    assert "commit" in manifest["git"]
    assert manifest["metrics"]["eval_loss"] > 0


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("torn-state", "trainer_state.json does not parse"),
        ("truncated-weights", "adapter_model.safetensors is"),
        ("truncated-optimizer", "optimizer.pt is cut off"),
        ('{}', "not a trainer state"),
        ('[]', "not a trainer state"),
        ('{"global_step": "sixty"}', "not a trainer state"),
        ('{"global_step": 999}', "says global_step 999, but the folder is checkpoint-20"),
        ('{"global_step": 20, "log_history": [{"step": 10}, {"step": 40}]}', "logs steps after its global_step 20"),
    ],
)
def test_resume_skips_a_checkpoint_whose_files_exist_but_are_damaged(tmp_path, damage, reason):
    from recipekit.rundir.checkpoints import resolve_resume, usable_checkpoints

    write_checkpoint(tmp_path / "checkpoint-10")
    if damage.startswith(("{", "[")):  # parses, but is not what the Trainer writes
        write_checkpoint(tmp_path / "checkpoint-20", state=damage)
        found, skipped = usable_checkpoints(tmp_path)
        assert found == tmp_path / "checkpoint-10"
        assert [(p.name, reason in why) for p, why in skipped] == [("checkpoint-20", True)]
        return
    newest = write_checkpoint(tmp_path / "checkpoint-20")
    target = {"torn-state": "trainer_state.json", "truncated-weights": "adapter_model.safetensors",
              "truncated-optimizer": "optimizer.pt"}[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(data[: len(data) // 2])
    found, skipped = usable_checkpoints(tmp_path)
    assert found == tmp_path / "checkpoint-10" == Path(resolve_resume("auto", tmp_path))
    assert [(p.name, reason in why) for p, why in skipped] == [("checkpoint-20", True)]


@pytest.mark.slow
def test_a_rerun_says_which_checkpoint_it_skipped_and_resumes_from_the_whole_one(work):
    """A SIGTERM at step 13 leaves checkpoint-10 and the preemption checkpoint; tear the newer one."""
    stopped = run_smoke(work, "--fault", "term", "--fault_step", "13")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    run = work / "runs" / "smoke"
    preempted = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert preempted.name != "checkpoint-10"
    torn = preempted / "trainer_state.json"
    torn.write_text(torn.read_text()[:40])
    resumed = run_smoke(work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipping runs/smoke/{preempted.name}: trainer_state.json does not parse" in resumed.stdout
    assert "resuming from runs/smoke/checkpoint-10" in resumed.stdout


def test_sharded_fsdp_checkpoints_count_as_complete_once_their_metadata_is_written(tmp_path):
    from recipekit.rundir.checkpoints import newest_complete_checkpoint

    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        (folder / "pytorch_model_fsdp_0").mkdir(parents=True)
        (folder / "trainer_state.json").write_text(f'{{"global_step": {step}, "log_history": []}}')
        (folder / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"shard")
    (tmp_path / "checkpoint-2" / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"plan")
    # checkpoint-4 lacks .metadata: torch.distributed.checkpoint was cut short before writing it
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    (tmp_path / "checkpoint-4" / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"plan")
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-4"


def test_overwriting_a_finished_run_also_forgets_its_evaluation_reports(tmp_path):
    from recipekit.rundir.checkpoints import clear_finished_run
    from recipekit.rundir.manifest import MANIFEST_NAME

    for folder in ("checkpoint-10", "eval-test", "eval-validation"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "file.json").write_text("{}")
    (tmp_path / MANIFEST_NAME).write_text("{}")
    (tmp_path / "notes.txt").write_text("the user's own file stays")
    clear_finished_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_resuming_with_other_settings_or_data_is_refused_unless_asked(work):
    """SIGTERM leaves a checkpoint; a rerun with another learning rate, or with changed data, is told
    what differs before anything loads, and goes on only with resume_despite_changes."""
    stopped = run_smoke(work, "--fault", "term", "--fault_step", "13")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    changed = run_smoke(work, "--learning_rate", "5e-3")
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "`learning_rate` 0.01 -> 0.005" in changed.stderr and "--resume_despite_changes true" in changed.stderr

    train_file = work / "runs" / "smoke-assets" / "fiqa" / "train.jsonl"
    original = train_file.read_bytes()
    train_file.write_bytes(original + original.splitlines(keepends=True)[0])
    data_changed = run_smoke(work)
    assert data_changed.returncode == 2 and "the train data" in data_changed.stderr and "sha256 differs" in data_changed.stderr

    forced = run_smoke(work, "--resume_despite_changes", "true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "resuming from" in forced.stdout and "despite changes" in forced.stdout
