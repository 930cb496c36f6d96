"""A full disk (or another failed write) during a run: at a checkpoint, a metrics write or a
chart. Each is named in one paragraph, exit status 74, the manifest says how the run ended,
and nothing half-written is trusted later: the rerun skips the torn checkpoint, and the
later commands refuse an adapter the run failed to finish. A test plugin makes one write
fail, the way the writing library reports a full disk, at step 20 (a save and an evaluation)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipekit.errors import RecipeError
from recipekit.runtime.io_faults import io_fault
from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")

DISK_FULL = '''
"""One write fails at step 20 as it would on a full disk; a marker file makes the rerun clean."""
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from plugins.base import RecipePlugin


@dataclass
class DiskFullConfig:
    disk_full_at: str = "checkpoint"   # checkpoint (torch.save), adapter (safetensors), metrics, chart


def once(module, name, error, when=lambda *a, **k: True):
    original = getattr(module, name)

    def failing(*args, **kwargs):
        if when(*args, **kwargs):
            setattr(module, name, original)
            raise error
        return original(*args, **kwargs)

    setattr(module, name, failing)


class _Fault(TrainerCallback):
    def __init__(self, where):
        self.where = where

    def on_step_end(self, args, state, control, **kwargs):
        marker = Path("fault.done")
        if state.global_step != 20 or marker.exists():
            return
        marker.write_text("done")
        if self.where == "checkpoint":
            import torch
            once(torch, "save", RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                                             "failed writing file data/0: file write failed"))
        elif self.where == "adapter":
            import peft.peft_model  # PEFT writes the adapter through its own name for safetensors' save_file
            from safetensors import SafetensorError
            once(peft.peft_model, "safe_save_file", SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'))
        elif self.where == "metrics":
            once(os, "fsync", OSError(errno.ENOSPC, "No space left on device"))
        else:
            import recipekit.runtime.atomic_io as atomic_io
            once(atomic_io, "atomic_write_bytes", OSError(errno.ENOSPC, "No space left on device", "loss.png"),
                 when=lambda path, data: str(path).endswith(".png"))


class DiskFull(RecipePlugin):
    config_class = DiskFullConfig

    def callbacks(self, recipe):
        return [_Fault(self.config.disk_full_at)]
'''


def run_smoke(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(work)])}
    plugins = ["plugins.loss_curves.LossCurves", "disk_full.DiskFull"]
    return subprocess.run([sys.executable, "-m", "recipes.run", SMOKE, "--plugins", *plugins, *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("checkpoint", "a write failed"),
        ("adapter", "the disk is full"),
        ("metrics", "the disk is full"),
        ("chart", "the disk is full while writing loss.png"),
    ],
)
def test_a_failed_write_during_training_is_named_and_recorded(tmp_path, where, named):
    (tmp_path / "disk_full.py").write_text(DISK_FULL)
    failed = run_smoke(tmp_path, "--disk_full_at", where)
    assert failed.returncode == 74, failed.stderr[-3000:]
    assert named in failed.stderr and "at step 20" in failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    run = tmp_path / "runs" / "smoke"
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == f"failed: {named.split(' while')[0]}" and manifest["stopped_at_step"] == 20
    assert "newest whole checkpoint is runs/smoke/checkpoint-" in failed.stderr
    if where in ("checkpoint", "adapter"):
        assert "checkpoint-10" in failed.stderr.split("newest whole checkpoint is")[1][:40]

        again = run_smoke(tmp_path, "--disk_full_at", where)  # the very same command, space freed
        assert again.returncode == 0, again.stderr[-3000:]
        assert "skipping" in again.stdout and "checkpoint-20" in again.stdout
        assert "resuming from" in again.stdout and "checkpoint-10" in again.stdout
        assert json.loads((run / "run_manifest.json").read_text())["status"] == "finished"


def test_io_faults_are_recognised_in_the_forms_libraries_report_them():
    assert io_fault(OSError(errno.ENOSPC, "No space left on device", "x.json")) == ("the disk is full", "x.json")
    assert io_fault(OSError(errno.EROFS, "Read-only file system"))[0] == "the file system is read-only"
    assert io_fault(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))[0] == "a write failed"
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert io_fault(wrapped)[0] == "the disk quota is used up"
    assert io_fault(ValueError("shapes do not match")) is None
    assert io_fault(OSError(errno.ENOENT, "No such file or directory")) is None


def test_later_commands_refuse_an_adapter_the_run_failed_to_finish(tmp_path):
    from recipekit.inference.trained_run import load_run_recipe

    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    (run / "recipe.yaml").write_text("model_name_or_path: x\n")
    (run / "run_manifest.json").write_text(json.dumps({"status": "failed: the disk is full"}))
    with pytest.raises(RecipeError, match="failed: the disk is full"):
        load_run_recipe(run)
    (run / "run_manifest.json").write_text(json.dumps({"status": "finished"}))
    (run / "adapter_model.safetensors").write_bytes((64).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape":'
                                                    b' [4], "data_offsets": [0, 16]}}'.ljust(64) + b"\0" * 8)
    with pytest.raises(RecipeError, match="truncated"):
        load_run_recipe(run)


def refusing(errno_: int):
    """A writer that fails as the disk would: with the OS error and the file it was writing."""
    def write(path, *args, **kwargs):
        raise OSError(errno_, os.strerror(errno_), str(path))
    return write


@pytest.mark.parametrize(("errno_", "says"), [(errno.ENOSPC, "the disk is full"),
                                              (errno.EROFS, "the file system is read-only")])
def test_preprocess_into_a_disk_that_takes_no_writes_is_one_paragraph(tmp_path, fiqa_csv_dir, monkeypatch, capsys,
                                                                      errno_, says):
    import preprocess.fiqa as fiqa

    monkeypatch.setattr(fiqa, "atomic_write_bytes", refusing(errno_))
    monkeypatch.setattr(fiqa, "atomic_write_text", refusing(errno_))
    assert fiqa.main(["--out", str(tmp_path / "out"), "--source", str(fiqa_csv_dir)]) == 74
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says} while writing {tmp_path / 'out'}") and err.count("error:") == 1, err
    assert "Nothing half-written was put in place" in err and "Traceback" not in err


def test_a_lock_on_a_disk_remounted_read_only_is_left_without_hiding_why_the_run_stopped(tmp_path, monkeypatch):
    from recipekit.rundir.lock import RunLock

    lock = RunLock(tmp_path / "run")
    lock.acquire()
    monkeypatch.setattr(Path, "unlink", refusing(errno.EROFS))
    lock.release()  # no OSError: the run's own stop message stays the one the user sees
    monkeypatch.undo()
    assert not lock.held and (tmp_path / "run" / ".run.lock").exists()
