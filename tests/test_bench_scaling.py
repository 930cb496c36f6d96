"""CPU run of the scaling harness: one process against two (gloo) with the same effective batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


@pytest.mark.slow
def test_scaling_harness_compares_two_processes_with_one(tmp_path, fiqa_jsonl_dir):
    out = tmp_path / "scaling.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT),
           "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--shape", "tiny", "--data_dir", str(fiqa_jsonl_dir),
         "--steps", "2", "--warmup", "1", "--work_dir", str(tmp_path / "work"), "--out", str(out),
         "--case", f"one=cpu:1:{SMOKE} --per_device_train_batch_size 8",
         "--case", f"two=cpu_multi_process:2:{SMOKE}", "--reference", "one"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one, two = json.loads(out.read_text())["results"]
    for entry in (one, two):
        assert entry["exit_code"] == 0 and "error" not in entry, entry
        assert entry["tokens"] > 0 and entry["seconds"] > 0 and entry["tokens_per_second"] > 0
        assert len(entry["losses"]) == 3  # warm-up + measured steps, one loss each
    assert one["is_reference"] and two["reference"] == "one"
    assert 0 < two["scaling_efficiency"] < 2  # measured on a busy 2-core CPU: only that it was computed
    # same examples per step and the same weights: the curves agree (the first loss to 1e-3)
    assert two["losses"][0] == pytest.approx(one["losses"][0], rel=1e-3)
    assert two["loss_max_relative_difference"] < 3e-2 and two["loss_compared_steps"] == 3
    assert "| two | cpu_multi_process | 2 |" in result.stdout and "reference" in result.stdout

    merged = subprocess.run([sys.executable, "-m", "bench.scaling", "--report", str(out), "--out",
                             str(tmp_path / "merged.json"), "--plot", str(tmp_path / "losses.png")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0 and "| two | cpu_multi_process | 2 |" in merged.stdout, merged.stderr
    assert json.loads((tmp_path / "merged.json").read_text())["results"][1]["scaling_efficiency"] == two["scaling_efficiency"]
    assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_malformed_case_is_refused_with_the_expected_form():
    from bench.scaling import parse_case

    with pytest.raises(SystemExit, match="NAME=CONFIG:PROCESSES:RECIPE"):
        parse_case("ddp=multi_gpu:recipes/nemotron_fiqa_qlora.yaml")
    with pytest.raises(SystemExit, match="no launch config accelerate_configs/nope.yaml"):
        parse_case("x=nope:2:recipes/nemotron_fiqa_qlora.yaml")
    case = parse_case("lora-fsdp=fsdp_lora:2:recipes/nemotron_fiqa_lora.yaml --max_length 4096")
    assert case == {"name": "lora-fsdp", "config": "fsdp_lora", "processes": 2,
                    "recipe": "recipes/nemotron_fiqa_lora.yaml", "overrides": "--max_length 4096"}


def test_scaling_efficiency_and_loss_agreement_are_judged_against_the_same_recipes_reference():
    """Known inputs: 2 processes at 1.8x one process's tokens/s scale at 90%; a case of another
    recipe is not compared with this reference; the loss difference is the largest per step."""
    from bench.scaling import compare

    results = compare([
        {"name": "one", "recipe": "a.yaml", "processes": 1, "tokens_per_second": 1000.0, "losses": [2.0, 1.0]},
        {"name": "two", "recipe": "a.yaml", "processes": 2, "tokens_per_second": 1800.0, "losses": [2.0, 1.03]},
        {"name": "other", "recipe": "b.yaml", "processes": 2, "tokens_per_second": 5000.0, "losses": [3.0]},
    ], references=["one"])
    one, two, other = results
    assert two["scaling_efficiency"] == 0.9 and two["reference"] == "one" and one["is_reference"]
    assert two["loss_max_relative_difference"] == 0.03 and two["loss_compared_steps"] == 2
    assert "scaling_efficiency" not in other and "reference" not in other


def test_a_launch_setting_after_the_config_goes_to_accelerate_launch_before_the_module(tmp_path):
    """``fsdp_qlora+fsdp_reshard_after_forward=false`` measures one launch setting without a copy of the
    config: the flag reaches ``accelerate launch`` (where it wins over the file), not the recipe."""
    from bench.scaling import launch_command, parse_case, table

    case = parse_case("q=fsdp_qlora+fsdp_reshard_after_forward=false+fsdp_version=2:2:recipes/nemotron_fiqa_qlora.yaml "
                      "--max_length 4096")
    assert case["config"] == "fsdp_qlora" and case["overrides"] == "--max_length 4096"
    assert case["launch_flags"] == ["--fsdp_reshard_after_forward", "false", "--fsdp_version", "2"]
    command = launch_command(case, tmp_path / "m", tmp_path / "d", tmp_path / "o", 5)
    module = command.index("-m", command.index("--num_processes"))
    assert command[module - 4:module] == case["launch_flags"] and command[module + 1] == "recipes.run"
    assert "--fsdp_reshard_after_forward" not in command[module:]
    row = {**case, "processes": 2, "tokens_per_second": 10.0, "gpu_peak_used_gib": {}, "error": None}
    assert "| q | fsdp_qlora --fsdp_reshard_after_forward false --fsdp_version 2 | 2 |" in table([row])
    with pytest.raises(SystemExit, match="launch setting 'fsdp_version' must be FLAG=VALUE"):
        parse_case("q=fsdp_qlora+fsdp_version:2:recipes/nemotron_fiqa_qlora.yaml")
    assert "launch_flags" not in parse_case("d=multi_gpu:2:recipes/nemotron_fiqa_qlora.yaml")


def test_resume_keeps_the_measured_cases_and_runs_the_failed_and_new_ones(tmp_path, monkeypatch):
    """One invocation over several short calls: a second call with --resume keeps what the first measured."""
    import bench.scaling as scaling

    ran = []

    def fake_case(case, *args):
        ran.append(case["name"])
        if case["name"] == "two" and ran.count("two") == 1:
            return {**case, "exit_code": 1, "error": "exit code 1: out of memory", "gpu_peak_used_gib": {}}
        return {**case, "exit_code": 0, "tokens": 100, "seconds": 1.0, "tokens_per_second": 100.0 * case["processes"],
                "losses": [1.0], "gpu_peak_used_gib": {}}

    monkeypatch.setattr(scaling, "build_assets", lambda work, shape, data: work / "model")
    monkeypatch.setattr(scaling, "run_case", fake_case)
    out = tmp_path / "scaling.json"
    argv = ["--data_dir", str(tmp_path), "--shape", "tiny", "--work_dir", str(tmp_path), "--out", str(out),
            "--case", "one=cpu:1:recipes/smoke.yaml", "--case", "two=cpu_multi_process:2:recipes/smoke.yaml",
            "--reference", "one", "--resume"]
    assert scaling.main(argv) == 1 and ran == ["one", "two"]  # the second case failed
    assert scaling.main(argv + ["--case", "three=cpu_multi_process:2:recipes/smoke.yaml"]) == 0
    assert ran == ["one", "two", "two", "three"]  # "one" kept, the failed "two" measured again
    results = json.loads(out.read_text())["results"]
    assert [r["name"] for r in results] == ["one", "two", "three"] and not any(r.get("error") for r in results)
    assert results[1]["scaling_efficiency"] == 1.0 and results[1]["reference"] == "one"
    scaling.main(argv[:-1])  # without --resume every case runs again
    assert ran[-2:] == ["one", "two"]
