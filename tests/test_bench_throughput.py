"""CPU smoke test of the throughput harness: a tiny random model, the TRL baseline and a recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_harness_measures_baseline_and_recipe_on_cpu(tmp_path, fiqa_jsonl_dir):
    out = tmp_path / "throughput.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--shape", "tiny", "--data_dir", str(fiqa_jsonl_dir),
         "--steps", "3", "--warmup", "1", "--work_dir", str(tmp_path / "work"), "--out", str(out),
         "--variant", "trl-baseline",
         "--variant", f"smoke={REPO_ROOT / 'recipes' / 'smoke.yaml'} --per_device_train_batch_size 2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["trl-baseline", "smoke"]
    for entry in report["results"]:
        assert "error" not in entry, entry
        assert entry["tokens"] > 0 and entry["seconds"] > 0
        assert abs(entry["tokens_per_second"] - entry["tokens"] / entry["seconds"]) < 0.02 * entry["tokens_per_second"]
    assert report["flops_per_token"] > 0
    assert "| trl-baseline |" in result.stdout and "1.00x" in result.stdout


def test_flops_per_token_counts_the_linear_weights_of_the_benchmarked_model():
    """MFU rests on the matmul weight count: it must be the Linear layers of the model the harness
    builds (not a formula checked against itself), for both shapes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.throughput import SHAPES, flops_per_token, matmul_parameters

    for shape in SHAPES.values():
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**shape))
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert matmul_parameters(shape) == linear
        assert flops_per_token(shape) == 4 * linear  # forward 2N + backward through activations 2N
