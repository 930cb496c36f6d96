"""push_to_hub publishes the whole finished run; trackers and the hub are checked before loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, train_smoke_in


def _run(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environment = {**os.environ, **env}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "recipes.run", str(REPO_ROOT / "recipes" / "smoke.yaml"), *args],
                          cwd=cwd, env=environment, capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def test_a_tracker_that_is_not_installed_is_named_with_its_pip_command_before_loading(tmp_path):
    done, seconds = _run(["--report_to", "wandb"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "pip install wandb" in done.stderr and "report_to" in done.stderr
    assert not (tmp_path / "runs" / "smoke").exists()  # nothing loaded, nothing written
    assert seconds < 30


def test_push_to_hub_offline_is_refused_in_seconds(tmp_path):
    done, seconds = _run(["--push_to_hub", "true", "--hub_model_id", "me/fiqa"], tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "HF_HUB_OFFLINE" in done.stderr
    assert seconds < 30


def test_push_to_hub_without_a_token_or_a_reachable_hub_is_refused_before_loading(tmp_path):
    no_token, _ = _run(["--push_to_hub", "true"], tmp_path, HF_HUB_OFFLINE="0", HF_TOKEN="", HF_HOME=str(tmp_path / "hf"))
    assert no_token.returncode == 2 and "needs a Hugging Face token" in no_token.stderr
    # A port nothing listens on stands for a hub that cannot be reached.
    unreachable, seconds = _run(["--push_to_hub", "true"], tmp_path, HF_HUB_OFFLINE="0", HF_TOKEN="hf_test",
                                HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    assert unreachable.returncode == 2 and "cannot be reached" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr and seconds < 40
    assert not (tmp_path / "runs" / "smoke").exists()


def test_the_tracker_table_covers_every_integration_transformers_knows():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from recipekit.config.trackers import TRACKER_PACKAGES, TRACKER_SERVICES

    assert set(TRACKER_PACKAGES) | set(TRACKER_SERVICES) == set(INTEGRATION_TO_CALLBACK)


@pytest.mark.slow
def test_tensorboard_writes_its_event_files_offline(tmp_path, tiny_model_dir):
    run = train_smoke_in(tmp_path, "--report_to", "tensorboard", "--num_train_epochs", "1")
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert (run / "run_manifest.json").is_file()


@pytest.mark.slow
def test_push_to_hub_uploads_the_finished_run_after_its_own_files(tmp_path, monkeypatch):
    """The upload is recorded as the hub would receive it: the folder's files at the moment of upload."""
    from fnmatch import fnmatch

    import huggingface_hub
    from huggingface_hub import constants

    uploads: list[dict] = []

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=(), path_in_repo=None, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        kept = [f for f in files if not any(fnmatch(f, pattern) for pattern in ignore_patterns)]
        manifest = json.loads((Path(folder_path) / "run_manifest.json").read_text()) if "run_manifest.json" in kept \
            else {}
        uploads.append({"repo_id": repo_id, "files": kept, "status": manifest.get("status"), "in": path_in_repo})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, token=None: {"name": "me"})
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: f"https://hub/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    train_smoke_in(tmp_path, "--push_to_hub", "true", "--hub_model_id", "me/fiqa-smoke", "--push_merged_model", "true")

    run_upload, merged_upload = uploads
    assert run_upload["repo_id"] == "me/fiqa-smoke" and run_upload["status"] == "finished"
    for name in ("README.md", "run_manifest.json", "recipe.yaml", "adapter_model.safetensors", "adapter_config.json",
                 "generation_config.json", "tokenizer_config.json", "loss.png", "metrics.jsonl", "data_report.json"):
        assert name in run_upload["files"], name
    assert not any(f.startswith("checkpoint-") for f in run_upload["files"])
    assert merged_upload["in"] == "merged" and "model.safetensors" in merged_upload["files"]
    assert "generation_config.json" in merged_upload["files"]
