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


def test_flops_per_token_of_the_nemotron_shape():
    from bench.throughput import SHAPES, flops_per_token, matmul_parameters

    # 32 layers x (q,o 4096^2 + k,v 4096x1024 + 3 x 4096x14336) + lm_head 4096 x 128256
    assert matmul_parameters(SHAPES["nemotron"]) == 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336) + 4096 * 128256
    assert 29e9 < flops_per_token(SHAPES["nemotron"]) < 31e9  # ~30 GFLOP per token, as the notes estimate
