"""CPU smoke test of the throughput harness: a tiny random model, the TRL baseline and a recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_harness_measures_baseline_and_recipe_on_cpu(tmp_path, fiqa_jsonl_dir):
    out = tmp_path / "throughput.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--shape", "tiny", "--data_dir", str(fiqa_jsonl_dir),
         "--steps", "3", "--warmup", "1", "--work_dir", str(tmp_path / "work"), "--out", str(out),
         "--variant", "trl-baseline", "--variant", "trl-best",
         "--variant", f"smoke={REPO_ROOT / 'recipes' / 'smoke.yaml'} --per_device_train_batch_size 2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["trl-baseline", "trl-best", "smoke"]
    for entry in report["results"]:
        assert "error" not in entry, entry
        assert entry["tokens"] > 0 and entry["seconds"] > 0
        assert abs(entry["tokens_per_second"] - entry["tokens"] / entry["seconds"]) < 0.02 * entry["tokens_per_second"]
    assert report["flops_per_token"] > 0
    assert "| trl-baseline |" in result.stdout and "1.00x" in result.stdout
    best = report["results"][1]["settings"]  # plain TRL's best knobs, on a CPU: Liger off, and the row says why
    assert best["packing"] and best["packing_strategy"] == "bfd" and best["padding_free"] and best["max_length"] == 8192
    assert best["activation_checkpointing"] is False and best["lora_r"] == 16 and not best["load_in_4bit"]
    assert best["use_liger_kernel"] is False and "need a GPU" in best["liger_note"]


def test_trl_best_is_plain_trl_at_its_own_best_knobs_and_says_when_liger_is_off(monkeypatch):
    import builtins

    from bench.throughput import parse_variant, plain_trl_knobs, sftconfig_overrides

    assert parse_variant("trl-best") == {"name": "trl-best", "kind": "baseline", "trl": "best", "overrides": ""}
    short = parse_variant("best-4096=trl-best --max_length 4096")
    assert short["name"] == "best-4096" and short["trl"] == "best"
    assert sftconfig_overrides(short["overrides"]) == {"max_length": 4096}
    with pytest.raises(SystemExit):
        sftconfig_overrides("--max_length")

    baseline = plain_trl_knobs("baseline", gpu=True)  # what trl-baseline always set
    assert baseline["init"]["quantization_config"]["load_in_4bit"] and baseline["lora"]["r"] == 8
    assert baseline["config"] == {"per_device_train_batch_size": 4}  # the rest: SFTConfig's defaults
    assert "quantization_config" not in plain_trl_knobs("baseline", gpu=False)["init"]

    on_cpu = plain_trl_knobs("best", gpu=False)
    assert on_cpu["config"]["use_liger_kernel"] is False and "need a GPU" in on_cpu["liger_note"]
    assert on_cpu["init"] == {"attn_implementation": "sdpa"}
    real_import = builtins.__import__

    def no_liger(name, *args, **kwargs):
        if name.startswith("liger_kernel"):
            raise ImportError("No module named 'liger_kernel'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_liger)
    on_gpu = plain_trl_knobs("best", gpu=True)
    assert on_gpu["config"]["use_liger_kernel"] is False and "does not import" in on_gpu["liger_note"]
    assert on_gpu["init"] == {"attn_implementation": "flex_attention"} and on_gpu["lora"] == {"r": 16, "lora_alpha": 32}
    assert on_gpu["config"]["activation_checkpointing"] is False and on_gpu["config"]["packing_strategy"] == "bfd"


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


def test_unsloth_variants_parse_with_their_settings_and_overrides():
    """unsloth-qlora / unsloth-lora are their own kind, with Unsloth's recommended settings, and take
    --key value overrides (also as NAME=unsloth-lora ...); nothing here imports unsloth."""
    import pytest

    from bench.throughput import parse_variant
    from bench.unsloth_variant import resolve_settings

    qlora = parse_variant("unsloth-qlora")
    assert qlora == {"name": "unsloth-qlora", "kind": "unsloth", "base": "unsloth-qlora", "overrides": ""}
    assert parse_variant("unsloth-lora")["kind"] == "unsloth"
    packed = parse_variant("lora-packed=unsloth-lora --packing true --per_device_train_batch_size 4")
    assert packed["name"] == "lora-packed" and packed["kind"] == "unsloth" and packed["base"] == "unsloth-lora"
    assert parse_variant("unsloth-lora --padding_free false")["name"] == "unsloth-lora"
    # the existing kinds are unchanged
    assert parse_variant("trl-baseline") == {"name": "trl-baseline", "kind": "baseline"}
    assert parse_variant("q=recipes/x.yaml --lora_r 4")["kind"] == "recipe"

    settings = resolve_settings(qlora)
    assert settings["load_in_4bit"] is True and resolve_settings(parse_variant("unsloth-lora"))["load_in_4bit"] is False
    assert settings["use_gradient_checkpointing"] == "unsloth" and settings["lora_dropout"] == 0.0
    assert settings["lora_target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert settings["padding_free"] is None and settings["packing"] is False  # Unsloth decides: padding-free
    overridden = resolve_settings(packed)
    assert overridden["packing"] is True and overridden["per_device_train_batch_size"] == 4
    assert resolve_settings(parse_variant("unsloth-lora --padding_free false"))["padding_free"] is False
    with pytest.raises(SystemExit):
        resolve_settings(parse_variant("unsloth-lora --no_such_key 1"))


def test_only_unsloth_workers_get_the_unsloth_site_and_offline_switches(tmp_path):
    from bench.throughput import parse_variant, worker_env

    # The caller runs from the project's own wheel dir (newer transformers than Unsloth supports).
    base = {"PATH": "/usr/bin", "PYTHONPATH": os.pathsep.join(["/tmp/site", "/repo"]), "HF_HUB_OFFLINE": "0"}
    site = tmp_path / "unsloth_site"
    for text in ("trl-baseline", "q=recipes/nemotron_fiqa_qlora.yaml"):
        assert worker_env(parse_variant(text), site, base) == base  # unchanged
    env = worker_env(parse_variant("unsloth-qlora"), site, base)
    # Unsloth's own site dir, then this project; never the caller's wheel dir, which would shadow the
    # image's transformers (this happened on the H200: bench/results/throughput_round4_h200_2026-11-30.json)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(site.resolve()), str(REPO_ROOT)]
    assert env["UNSLOTH_DISABLE_STATISTICS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["PATH"] == "/usr/bin" and base["PYTHONPATH"] == os.pathsep.join(["/tmp/site", "/repo"])  # caller's dict untouched
    assert worker_env(parse_variant("unsloth-lora"), site, {})["PYTHONPATH"].split(os.pathsep) == [
        str(site.resolve()), str(REPO_ROOT)]
    assert "PYTHONPATH" not in worker_env(parse_variant("unsloth-lora"), None, {})


def test_worker_dispatches_unsloth_variants_and_keeps_the_result_format(monkeypatch):
    import bench.unsloth_variant
    from bench.throughput import parse_variant, worker

    seen = {}

    def fake_run(spec):
        seen.update(spec)
        history = [{"step": s, "num_input_tokens_seen": 100 * s, "step_time_seconds": 0.5, "loss": 1.0} for s in (1, 2, 3)]
        return {"log_history": history, "settings": {"load_in_4bit": True}}

    monkeypatch.setattr(bench.unsloth_variant, "run_unsloth_variant", fake_run)
    spec = {**parse_variant("unsloth-qlora"), "model_dir": "m", "data_dir": "d", "output_dir": "o",
            "steps": 2, "warmup": 1, "shape": "tiny"}
    result = worker(spec)
    assert seen["base"] == "unsloth-qlora"
    assert result["name"] == "unsloth-qlora" and result["settings"] == {"load_in_4bit": True}
    assert result["tokens"] == 200 and result["tokens_per_second"] == 200.0  # steps 2 and 3 only
    assert set(result["host_load_1min"]) == {"before", "after"}  # the host's load beside each measured speed
    assert all(load >= 0 for load in result["host_load_1min"].values())


def test_main_passes_unsloth_site_to_the_unsloth_worker_only(tmp_path, monkeypatch):
    import subprocess as sp

    import bench.throughput as throughput

    calls = []

    def fake_run(cmd, **kwargs):
        spec = json.loads(cmd[cmd.index("--worker") + 1])
        calls.append((spec, kwargs["env"]))
        row = {"name": spec["name"], "tokens": 10, "seconds": 1.0, "tokens_per_second": 10.0, "settings": {}}
        return sp.CompletedProcess(cmd, 0, stdout="RESULT " + json.dumps(row) + "\n", stderr="")

    monkeypatch.setattr(throughput, "build_assets", lambda work, shape, data: work / "model")
    monkeypatch.setattr(throughput.subprocess, "run", fake_run)
    monkeypatch.setenv("PYTHONPATH", "/repo")
    out = tmp_path / "out.json"
    throughput.main(["--data_dir", str(tmp_path), "--shape", "tiny", "--work_dir", str(tmp_path), "--out", str(out),
                     "--unsloth_site", str(tmp_path / "site"), "--variant", "trl-baseline",
                     "--variant", "unsloth-qlora", "--variant", "unsloth-lora"])
    envs = {spec["name"]: env for spec, env in calls}
    assert envs["trl-baseline"]["PYTHONPATH"] == "/repo" and "UNSLOTH_DISABLE_STATISTICS" not in envs["trl-baseline"]
    for name in ("unsloth-qlora", "unsloth-lora"):
        assert envs[name]["PYTHONPATH"].split(os.pathsep)[0] == str((tmp_path / "site").resolve())
        assert envs[name]["UNSLOTH_DISABLE_STATISTICS"] == "1" and envs[name]["HF_HUB_OFFLINE"] == "1"
    assert [r["name"] for r in json.loads(out.read_text())["results"]] == ["trl-baseline", "unsloth-qlora", "unsloth-lora"]


def test_a_failed_worker_leaves_its_whole_output_beside_the_report(tmp_path, monkeypatch):
    import subprocess as sp

    import bench.throughput as throughput

    def failing_run(cmd, **kwargs):
        return sp.CompletedProcess(cmd, 1, stdout="loading\n", stderr="Traceback ...\nImportError: no unsloth\n")

    monkeypatch.setattr(throughput, "build_assets", lambda work, shape, data: work / "model")
    monkeypatch.setattr(throughput.subprocess, "run", failing_run)
    out = tmp_path / "res" / "unsloth.json"
    throughput.main(["--data_dir", str(tmp_path), "--shape", "tiny", "--work_dir", str(tmp_path), "--out", str(out),
                     "--variant", "unsloth-qlora"])
    row = json.loads(out.read_text())["results"][0]
    assert row["name"] == "unsloth-qlora" and "ImportError: no unsloth" in row["error"]
    log = (tmp_path / "res" / "unsloth.unsloth-qlora.log").read_text()
    assert "loading" in log and "Traceback" in log


def test_fast_path_report_flags_a_path_whose_loss_drifts(tmp_path):
    """The report passes a fast path only when every step's loss is within the tolerance."""
    from bench.fast_path_report import main as report_main

    plain = [[s, 12.0 - 0.1 * s] for s in range(1, 26)]
    close = [[s, loss * (1 + 1e-5)] for s, loss in plain]
    drifting = [[s, loss * (1 + 0.002 * s)] for s, loss in plain]  # 0.2% more per step
    source = tmp_path / "fp.json"
    source.write_text(json.dumps({"date": "d", "shape": "s", "results": [
        {"name": "plain", "losses": plain}, {"name": "close", "losses": close}, {"name": "drifting", "losses": drifting}]}))
    out = tmp_path / "report.json"
    assert report_main([str(source), "--tolerance", "0.001", "--out", str(out), "--plot", str(tmp_path / "fp.png")]) == 0
    rows = {r["name"]: r for r in json.loads(out.read_text())["comparisons"]}
    assert rows["close"]["within_tolerance"] and rows["close"]["steps_compared"] == 25
    assert not rows["drifting"]["within_tolerance"] and rows["drifting"]["max_relative_difference"] == pytest.approx(0.05)
    assert (tmp_path / "fp.png").stat().st_size > 0


def test_steady_state_reads_logs_that_cover_several_steps_and_trls_token_count():
    from bench.throughput import steady_state

    # A log every 2 steps, the trainer not counting tokens: TRL's num_tokens, cumulative.
    history = [{"step": 2, "num_tokens": 200.0, "step_time_seconds": 0.5, "loss": 1.0},
               {"step": 4, "num_tokens": 600.0, "step_time_seconds": 1.0, "loss": 0.9},
               {"step": 6, "num_tokens": 1000.0, "step_time_seconds": 0.25, "loss": 0.8},
               {"step": 6, "train_runtime": 9.0}]
    # Warm-up 2: the first log (steps 1-2) is left out; steps 3-6 took 2 x 1.0 + 2 x 0.25 s for 800 tokens.
    assert steady_state(history, warmup=2) == {"tokens": 800, "seconds": 2.5, "tokens_per_second": 320.0}
    # The trainer's own count wins where it kept one.
    counted = [{**row, "num_input_tokens_seen": 2 * row["num_tokens"]} for row in history[:3]]
    assert steady_state(counted, warmup=2)["tokens"] == 1600


def test_log_every_must_divide_the_warm_up_and_the_measured_steps(tmp_path, capsys):
    import bench.throughput as throughput

    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--data_dir", str(tmp_path), "--steps", "10", "--warmup", "4", "--log_every", "5"])
    assert exit_info.value.code == 2
    assert "must be multiples of --log_every (5)" in capsys.readouterr().err


def test_steady_state_with_a_first_step_log_and_a_log_the_timer_skipped():
    from bench.throughput import steady_state

    history = [{"step": 1, "num_tokens": 100.0, "step_time_seconds": 2.0, "loss": 1.0},  # logging_first_step
               {"step": 5, "num_tokens": 500.0, "step_time_seconds": 1.0, "loss": 0.9},
               {"step": 10, "num_tokens": 1000.0, "loss": 0.8},  # no time: its window (steps 6-10) is left out
               {"step": 15, "num_tokens": 1600.0, "step_time_seconds": 0.5, "loss": 0.7}]
    # Warm-up 5: steps 6-10 have no time, so only steps 11-15 count: 600 tokens in 5 x 0.5 s.
    assert steady_state(history, warmup=5) == {"tokens": 600, "seconds": 2.5, "tokens_per_second": 240.0}


def test_resume_keeps_measured_variants_and_measures_failed_and_new_ones_again(tmp_path, monkeypatch):
    import subprocess as sp

    import bench.throughput as throughput

    ran = []

    def fake_run(cmd, **kwargs):
        spec = json.loads(cmd[cmd.index("--worker") + 1])
        ran.append(spec["name"])
        row = {"name": spec["name"], "tokens": 10, "seconds": 1.0, "tokens_per_second": 10.0, "settings": {}}
        return sp.CompletedProcess(cmd, 0, stdout="RESULT " + json.dumps(row) + "\n", stderr="")

    monkeypatch.setattr(throughput, "build_assets", lambda work, shape, data: work / "model")
    monkeypatch.setattr(throughput.subprocess, "run", fake_run)
    out = tmp_path / "out.json"
    earlier = [{"name": "trl-baseline", "tokens": 5, "seconds": 1.0, "tokens_per_second": 5.0, "settings": {}},
               {"name": "trl-best", "error": "cut off"}]
    out.write_text(json.dumps({"results": earlier}))
    args = ["--data_dir", str(tmp_path), "--shape", "tiny", "--work_dir", str(tmp_path), "--out", str(out),
            "--variant", "trl-baseline", "--variant", "trl-best", "--variant", "lora=recipes/nemotron_fiqa_lora.yaml"]
    throughput.main([*args, "--resume"])
    assert ran == ["trl-best", "lora"]  # the measured baseline is kept, the failed row measured again
    results = json.loads(out.read_text())["results"]
    assert [(r["name"], r["tokens_per_second"]) for r in results] == [("trl-baseline", 5.0), ("trl-best", 10.0),
                                                                       ("lora", 10.0)]
    throughput.main(args)  # without --resume, every variant is measured again and the file rewritten
    assert ran[2:] == ["trl-baseline", "trl-best", "lora"] and len(json.loads(out.read_text())["results"]) == 3
