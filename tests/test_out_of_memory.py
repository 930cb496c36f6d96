"""A GPU that runs out of memory: one paragraph with torch's figures and the recipe keys that fit
the run in, exit status 2, no traceback, and the manifest says how the run ended. A test plugin
raises torch's own error where a real one comes from: a training step or an evaluation batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from recipekit.runtime.out_of_memory import is_out_of_memory, out_of_memory_message
from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")
TORCH_MESSAGE = ("CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of 11.63 GiB of which "
                 "312.00 MiB is free. Of the allocated memory 10.80 GiB is allocated by PyTorch, and 190.00 MiB is "
                 "reserved by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
                 "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")

FULL_GPU = f'''
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from plugins.base import RecipePlugin


@dataclass
class FullGpuConfig:
    full_gpu_in: str = "training"   # training (a step) or evaluation (an evaluation batch)


class _Full(TrainerCallback):
    def __init__(self, where):
        self.where = where

    def on_step_begin(self, args, state, control, **kwargs):
        if self.where == "training" and state.global_step == 3:  # in step 4
            raise torch.OutOfMemoryError({TORCH_MESSAGE!r})

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.where == "evaluation":
            raise torch.OutOfMemoryError({TORCH_MESSAGE!r})


class FullGpu(RecipePlugin):
    config_class = FullGpuConfig

    def callbacks(self, recipe):
        return [_Full(self.config.full_gpu_in)]
'''


@pytest.mark.slow
@pytest.mark.parametrize(("where", "said"), [("training", "at step 4"), ("evaluation", "in the evaluation after step 10")])
def test_out_of_memory_is_one_paragraph_with_what_to_change(tmp_path, where, said):
    (tmp_path / "full_gpu.py").write_text(FULL_GPU)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(tmp_path)])}
    done = subprocess.run([sys.executable, "-m", "recipes.run", SMOKE, "--plugins", "plugins.loss_curves.LossCurves",
                           "full_gpu.FullGpu",
                           "--full_gpu_in", where], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert [line for line in done.stderr.splitlines() if "rror" in line] == [error]  # one paragraph, on its own line
    assert error.startswith(f"error: the GPU ran out of memory {said}: Tried to allocate 1.95 GiB. GPU 0 has a total "
                            "capacity of 11.63 GiB of which 312.00 MiB is free.")
    assert "activation_checkpointing: true" in error and "max_length" not in error  # the smoke recipe's packs are short
    assert "recipes/nemotron_fiqa_qlora_lean.yaml" in error and "PYTORCH_CUDA_ALLOC_CONF" not in error
    assert ("per_device_eval_batch_size" in error) == (where == "evaluation")
    manifest = json.loads((tmp_path / "runs" / "smoke" / "run_manifest.json").read_text())
    assert manifest["status"] == "failed: out of GPU memory" and manifest["stopped_at_step"] == int(said.split()[-1]) - (where == "training")


def test_the_remedies_skip_what_the_recipe_already_does():
    error = RuntimeError(TORCH_MESSAGE)
    assert is_out_of_memory(error) and not is_out_of_memory(RuntimeError("shapes do not match"))
    lean = SimpleNamespace(activation_checkpointing=True, max_length=8192, per_device_eval_batch_size=8)
    message = out_of_memory_message(error, lean, SimpleNamespace(load_in_4bit=True), "at step 7", "runs/x/checkpoint-5")
    assert "activation_checkpointing" not in message and "load_in_4bit" not in message
    assert "lower `max_length` (now 8192" in message and "runs/x/checkpoint-5" in message
    bf16 = SimpleNamespace(activation_checkpointing=False, max_length=8192, per_device_eval_batch_size=8)
    message = out_of_memory_message(error, bf16, SimpleNamespace(load_in_4bit=False, load_in_8bit=False),
                                    "while loading the model and preparing training", None)
    assert "`activation_checkpointing: true`" in message and "`load_in_4bit: true`" in message
    assert "checkpoint" not in message.split("To fit")[0]
