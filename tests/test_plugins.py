"""Plugins: loading and errors, plugin keys, loss-curve files across kill -9 and resume,
charts that show the logged values, the re-plot CLI, and throughput figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recipekit.config.parse import parse_recipe
from recipekit.errors import RecipeError
from recipes.run import main
from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")

KILL_PLUGIN = textwrap.dedent(
    '''
    """A user plugin in the user's own module: kill -9 this process at a given step."""
    import os
    import signal
    from dataclasses import dataclass

    from transformers import TrainerCallback

    from plugins.base import RecipePlugin


    @dataclass
    class KillConfig:
        kill_at_step: int = 0


    class _KillCallback(TrainerCallback):
        def __init__(self, step):
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)


    class KillAtStep(RecipePlugin):
        config_class = KillConfig

        def callbacks(self, recipe):
            return [_KillCallback(self.config.kill_at_step)]
    '''
)


def run_recipe(args: list[str], cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(str(p) for p in (REPO_ROOT, extra_path) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "recipes.run", SMOKE, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def read_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- loading ---------------------------------------------------------------------------------


def test_bad_plugin_paths_fail_before_anything_loads(tmp_path, capsys):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        argv = [SMOKE, "--model_name_or_path", str(tmp_path / "no-model"), "--build_smoke_assets", "false",
                "--output_dir", str(tmp_path / "run"),
                "--plugins", "plugins.nope.Missing", "plugins.loss_curves.NoSuchClass", "broken_plugin.Thing",
                "NotDotted"]
        assert main(argv) == 2
    finally:
        sys.path.remove(str(tmp_path))
    err = capsys.readouterr().err
    assert "plugin `plugins.nope.Missing`: importing `plugins.nope` failed: module `plugins.nope` was not found" in err
    assert "plugin `plugins.loss_curves.NoSuchClass`: module `plugins.loss_curves` has no attribute `NoSuchClass`" in err
    assert "plugin `broken_plugin.Thing`: importing `broken_plugin` raised RuntimeError: boom at import" in err
    assert "plugin `NotDotted`: it is not a dotted path" in err
    assert "Traceback" not in err and "no-model" not in err  # failed on the plugins, before the model
    assert not (tmp_path / "run").exists()


def test_a_class_that_is_not_a_plugin_is_refused():
    with pytest.raises(RecipeError, match="`TrainerCallback` is not a subclass of plugins.base.RecipePlugin"):
        parse_recipe([SMOKE, "--plugins", "transformers.TrainerCallback"])


def test_plugin_keys_are_validated_and_overridable(tmp_path):
    recipe = parse_recipe([SMOKE, "--loss_curves_smoothing", "0.5"])
    loss_curves = next(p for p in recipe.plugins if type(p).__name__ == "LossCurves")
    assert loss_curves.config.loss_curves_smoothing == 0.5
    with pytest.raises(RecipeError, match=r"`loss_curves_smoothing` must be in \[0, 1\)"):
        parse_recipe([SMOKE, "--loss_curves_smoothing", "1.5"])
    with pytest.raises(RecipeError, match="Did you mean `loss_curves_smoothing`"):
        parse_recipe([SMOKE, "--loss_curve_smoothing", "0.5"])
    # Without the plugin listed, its key is refused, naming the plugin that owns it.
    with pytest.raises(RecipeError, match="`loss_curves_smoothing` in the recipe belongs to the plugin "
                                          "plugins.loss_curves.LossCurves, which the recipe does not list"):
        parse_recipe([SMOKE, "--plugins", "plugins.throughput.Throughput", "--loss_curves_smoothing", "0.5"])


def test_throughput_plugin_changes_no_setting():
    recipe = parse_recipe([SMOKE])
    assert recipe.training.include_num_input_tokens_seen == "non_padding"  # as the recipe says
    assert recipe.resolved["include_num_input_tokens_seen"] == "non_padding"
    assert parse_recipe([SMOKE, "--include_num_input_tokens_seen", "all"]).training.include_num_input_tokens_seen == "all"
    assert parse_recipe([SMOKE, "--include_num_input_tokens_seen", "no"]).training.include_num_input_tokens_seen == "no"


@pytest.mark.slow
def test_without_the_trainers_token_count_the_plugin_divides_trls_own(tmp_path):
    """The trainer's count costs a host sync every step; TRL counts the same tokens anyway and logs
    them as num_tokens, so a recipe may turn the trainer's off and keep tokens per second."""
    from tests.conftest import train_smoke_in

    run = train_smoke_in(tmp_path, "--include_num_input_tokens_seen", "no", "--max_steps", "6",
                         "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false")
    logs = [h for h in json.loads((run / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [2, 4, 6]
    assert all("num_input_tokens_seen" not in h for h in logs)  # the trainer did not count
    previous = 0
    for h in logs:
        tokens = h["num_tokens"] - previous
        previous = h["num_tokens"]
        assert tokens > 0
        expected = tokens / (2 * h["step_time_seconds"])
        # step_time_seconds is logged to 4 decimals, tokens_per_second to 2: both roundings, added
        rounding = expected * 0.00005 / h["step_time_seconds"] + 0.005
        assert abs(h["tokens_per_second"] - expected) <= rounding, (h, expected)
    # TRL's count is the trainer's non-padding count: the same run with the trainer counting too.
    (tmp_path / "both").mkdir()
    both = train_smoke_in(tmp_path / "both", "--max_steps", "6", "--eval_strategy", "no", "--save_strategy", "no",
                          "--load_best_model_at_end", "false")
    logs_both = [h for h in json.loads((both / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["num_tokens"] for h in logs_both] == [h["num_input_tokens_seen"] for h in logs_both]
    assert [h["num_tokens"] for h in logs_both] == [h["num_tokens"] for h in logs]  # same batches either way


# --- a run killed with SIGKILL, then resumed --------------------------------------------------


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("kill-resume")
    (work / "user_plugins").mkdir()
    (work / "user_plugins" / "kill_at_step.py").write_text(KILL_PLUGIN)
    plugins = ["plugins.throughput.Throughput", "plugins.loss_curves.LossCurves"]

    killed = run_recipe(["--plugins", *plugins, "user_plugins.kill_at_step.KillAtStep", "--kill_at_step", "25"],
                        cwd=work, extra_path=work)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = work / "runs" / "smoke"
    logged_before_kill = [r["step"] for r in read_rows(run) if r["kind"] == "train"]
    assert logged_before_kill == list(range(2, 25, 2))  # every log up to the kill survived it
    assert (run / "loss.png").is_file()  # drawn at the evaluations before the kill

    resumed = run_recipe(["--plugins", *plugins, "--resume_from_checkpoint", "runs/smoke/checkpoint-20"], cwd=work)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return run


@pytest.mark.slow
def test_metrics_have_one_row_per_logged_step_across_kill_and_resume(resumed_run):
    import csv

    rows = read_rows(resumed_run)
    train_steps = [r["step"] for r in rows if r["kind"] == "train"]
    eval_steps = [r["step"] for r in rows if r["kind"] == "eval"]
    assert train_steps == list(range(2, 61, 2))  # logging_steps 2, 60 steps: each exactly once
    assert eval_steps == [10, 20, 30, 40, 50, 60]
    assert [r["kind"] for r in rows].count("summary") == 1

    with (resumed_run / "metrics.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [(int(r["step"]), r["kind"]) for r in csv_rows] == [(r["step"], r["kind"]) for r in rows]
    assert [float(r["loss"]) for r in csv_rows if r["kind"] == "train"] == [r["loss"] for r in rows if r["kind"] == "train"]

    state = json.loads((resumed_run / "trainer_state.json").read_text())
    history_losses = {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}
    assert {r["step"]: r["loss"] for r in rows if r["kind"] == "train"} == history_losses


@pytest.mark.slow
def test_charts_exist_are_not_blank_and_plot_the_logged_values(resumed_run):
    import numpy as np
    from matplotlib.image import imread

    from plugins.loss_curves.plotting import loss_figure, single_metric_figure

    for name in ("loss.png", "learning_rate.png", "grad_norm.png", "throughput.png"):
        pixels = imread(resumed_run / name)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50, f"{name} looks blank"

    rows = read_rows(resumed_run)
    figure = loss_figure(rows, "smoke", smoothing=0.8)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r["kind"] == "eval"]
    assert list(lines["train (raw)"].get_xdata()) == [s for s, _ in train]
    assert list(lines["train (raw)"].get_ydata()) == [v for _, v in train]
    assert list(lines["validation"].get_ydata()) == [v for _, v in evals]
    assert figure.axes[0].get_title() == "smoke: loss" and figure.axes[0].get_xlabel() == "optimizer step"

    lr = single_metric_figure(rows, "learning_rate", "smoke: lr", "learning rate", "green")
    assert list(lr.axes[0].get_lines()[0].get_ydata()) == [r["learning_rate"] for r in rows if r["kind"] == "train"]


def test_throughput_figures_are_logged(resumed_run, tiny_tokenizer):
    rows = [r for r in read_rows(resumed_run) if r["kind"] == "train"]
    assert all(r["tokens_per_second"] > 0 and r["step_time_seconds"] > 0 for r in rows)
    # Non-padding tokens: after 6 epochs the count equals 6 x the tokens of the (truncated) training set.
    from datasets import load_dataset

    from recipekit.training.data import token_spans

    train = load_dataset("json", data_files=str(resumed_run.parent / "smoke-assets" / "fiqa" / "train.jsonl"), split="train")
    tokens_per_epoch = sum(min(total, 512) for _, total in token_spans(train, tiny_tokenizer))
    assert rows[-1]["num_input_tokens_seen"] == 6 * tokens_per_epoch


def two_log_windows_around_a_pause(callback, args, before_first_log=lambda: None) -> tuple[dict, dict]:
    """Steps 1 (100 tokens) and 2 (200), a log, an evaluation and a save, step 3 (300), a log:
    the two log entries, as the trainer calls the hooks."""
    from types import SimpleNamespace

    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0, log_history=[])
    callback.on_train_begin(args, state, None)
    for tokens in (100, 200):
        state.num_input_tokens_seen += tokens
        state.global_step += 1
        callback.on_step_end(args, state, None)
    before_first_log()
    first = {"loss": 1.0}
    callback.on_log(args, state, None, logs=first)
    callback.on_evaluate(args, state, None)
    callback.on_save(args, state, None)
    state.num_input_tokens_seen += 300
    state.global_step += 1
    callback.on_step_end(args, state, None)
    second = {"loss": 0.9}
    callback.on_log(args, state, None, logs=second)
    return first, second


def test_throughput_times_each_step_from_the_previous_step_end_and_leaves_pauses_out(monkeypatch):
    """Batch loading happens before on_step_begin, so it is inside the timed span; logging,
    evaluation and saving restart the clock, so they are not."""
    from types import SimpleNamespace

    import plugins.throughput as throughput

    ticks = iter([0.0,        # on_train_begin
                  1.0, 3.0,   # steps 1 and 2 end: 3 s since the start, loading included
                  3.2,        # the log at step 2 restarts the clock
                  10.0, 10.5,  # evaluation and saving end: each restarts it
                  12.0,       # step 3 ends: 1.5 s after the last pause
                  12.1])      # its log
    monkeypatch.setattr(throughput, "_cuda", lambda: None)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(ticks))
    callback = throughput.ThroughputCallback()
    args = SimpleNamespace(include_num_input_tokens_seen="non_padding")  # the trainer counts
    first, second = two_log_windows_around_a_pause(callback, args)

    assert first["step_time_seconds"] == 1.5 and first["tokens_per_second"] == 100.0
    assert second["step_time_seconds"] == 1.5 and second["tokens_per_second"] == 200.0
    assert next(ticks, None) is None  # every hook read the clock exactly once


def test_the_clock_restarts_after_every_callback_of_a_pause(monkeypatch):
    """Work that other callbacks do at a log (writing metrics files, drawing charts) is a pause
    too: the plugin's last callback restarts the clock after it."""
    from types import SimpleNamespace

    import plugins.throughput as throughput

    ticks = iter([0.0, 1.0, 1.1, 5.0, 6.0, 6.1])
    monkeypatch.setattr(throughput, "_cuda", lambda: None)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(ticks))
    plugin = throughput.Throughput()
    callbacks = plugin.callbacks(recipe=None)
    trainer = SimpleNamespace(callbacks=list(callbacks), add_callback=lambda cb: trainer.callbacks.append(cb))
    plugin.on_trainer_ready(trainer, recipe=None)
    assert isinstance(trainer.callbacks[-1], throughput.RestartClockAfterPauses)
    timer = callbacks[0]
    args = SimpleNamespace(include_num_input_tokens_seen="non_padding")  # the trainer counts
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0, log_history=[])
    timer.on_train_begin(args, state, None)           # 0.0
    state.num_input_tokens_seen, state.global_step = 100, 1
    timer.on_step_end(args, state, None)              # 1.0: step 1 took 1 s
    timer.on_log(args, state, None, logs={"loss": 1.0})  # 1.1
    trainer.callbacks[-1].on_log(args, state, None)   # 5.0: after the other callbacks' 3.9 s of writing
    state.num_input_tokens_seen, state.global_step = 300, 2
    timer.on_step_end(args, state, None)              # 6.0: step 2 took 1 s, not 4.9
    second = {"loss": 0.9}
    timer.on_log(args, state, None, logs=second)      # 6.1
    assert second["step_time_seconds"] == 1.0 and second["tokens_per_second"] == 200.0


@pytest.mark.slow
def test_replot_cli_compares_two_runs(resumed_run, tmp_path):
    # The second run is known only by its trainer_state.json, as any HF Trainer run would be.
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "trainer_state.json").write_bytes((resumed_run / "trainer_state.json").read_bytes())
    out = tmp_path / "plots"
    result = subprocess.run(
        [sys.executable, "-m", "plugins.loss_curves", str(resumed_run), str(other), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "loss_comparison.png").is_file()
    assert (out / "smoke" / "loss.png").is_file() and (out / "other-run" / "loss.png").is_file()

    from plugins.loss_curves.metrics_log import read_run_rows
    from plugins.loss_curves.plotting import comparison_figure

    figure = comparison_figure({"smoke": read_run_rows(resumed_run), "other-run": read_run_rows(other)})
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["smoke train (EMA)", "smoke validation", "other-run train (EMA)", "other-run validation"]


@pytest.mark.slow
def test_replot_cli_explains_a_folder_without_metrics(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "plugins.loss_curves", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300,
    )
    assert result.returncode == 2 and "neither metrics.jsonl nor a trainer_state.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_plugin_example_works(tmp_path, monkeypatch):
    """The plugins guide's "write your own" example (docs/plugins.md), run as written: it stops training at the first evaluation."""
    import json
    import re

    from recipekit.training.trainer import train

    readme = (REPO_ROOT / "docs" / "plugins.md").read_text()
    section = readme[readme.index("### Write your own"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "my_plugins.py").write_text(example)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)

    recipe = parse_recipe([SMOKE, "--plugins", "plugins.loss_curves.LossCurves", "my_plugins.StopAtLoss", "--stop_at_loss", "100",
                           "--output_dir", str(tmp_path / "run")])
    train(recipe)
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 10  # eval_steps 10: the first evaluation (loss < 100) stopped it


def test_every_shipped_recipe_parses():
    for path in sorted((REPO_ROOT / "recipes").glob("*.yaml")):
        recipe = parse_recipe([str(path), "--use_cpu", "true"], check_environment=False)
        assert recipe.training.output_dir and recipe.training.completion_only_loss is True, path.name
        assert {"Throughput", "LossCurves"} <= {type(p).__name__ for p in recipe.plugins}, path.name


def test_replot_uses_the_runs_own_smoothing(tmp_path):
    from plugins.loss_curves.__main__ import run_smoothing

    run = tmp_path / "run"
    run.mkdir()
    assert run_smoothing(run) == 0.9  # no recipe.yaml: the default
    (run / "recipe.yaml").write_text("recipe_name: smoke\nloss_curves_smoothing: 0.6\n")
    assert run_smoothing(run) == 0.6


def test_a_series_of_one_point_is_drawn():
    from plugins.loss_curves.plotting import loss_figure

    rows = [{"step": 1, "kind": "train", "loss": 2.5}]
    lines = loss_figure(rows, "one step").axes[0].get_lines()
    assert all(line.get_marker() not in (None, "None", "") for line in lines)  # a marker, or nothing shows


def test_a_damaged_metrics_file_is_named_and_the_charts_come_from_the_trainer_state(tmp_path, capsys):
    """plugins.loss_curves never stops on a torn metrics.jsonl: it says which line and draws from
    trainer_state.json; with neither readable it is an error naming the file."""
    import json as json_module

    from plugins.loss_curves.__main__ import main as curves_main

    run = tmp_path / "run"
    run.mkdir()
    history = [{"step": s, "epoch": s / 10, "loss": 3.0 - 0.1 * s, "learning_rate": 1e-3} for s in range(1, 6)]
    (run / "trainer_state.json").write_text(json_module.dumps({"global_step": 5, "log_history": history}))
    (run / "metrics.jsonl").write_text('{"step": 1, "kind": "train", "loss": 2.9}\n{"step": 2, "lo')
    assert curves_main([str(run)]) == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl, line 2: not a metrics row" in err and "Drawing from" in err and "Traceback" not in err
    assert (run / "loss.png").is_file()
    (run / "trainer_state.json").write_text('{"global_step": 5, "log_history": [1, "x"]}')
    assert curves_main([str(run)]) == 2
    assert "log_history is not a list of log entries" in capsys.readouterr().err


def test_a_resumed_run_rebuilds_damaged_metrics_rows_from_the_checkpoint(tmp_path, capsys):
    from plugins.loss_curves.metrics_log import MetricsLog, read_jsonl_rows

    log = MetricsLog(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("not json\n")
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.2}]
    log.start(resumed_step=2, log_history=history)
    assert "line 1: not a metrics row" in capsys.readouterr().out
    assert [r["step"] for r in read_jsonl_rows(tmp_path / "metrics.jsonl")] == [1, 2]


def test_a_rerun_after_a_stop_at_the_end_writes_the_end_of_training_rows_once(tmp_path):
    """Stopped after the summary and final evaluation were logged (a full disk while saving the
    adapter), then resumed from the last checkpoint: those rows are written again, not twice."""
    import json

    from plugins.loss_curves.metrics_log import MetricsLog, read_jsonl_rows

    rows = [{"step": 10, "kind": "train", "loss": 2.0}, {"step": 20, "kind": "train", "loss": 1.5},
            {"step": 20, "kind": "summary", "train_loss": 1.7}, {"step": 20, "kind": "final_eval", "eval_loss": 1.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = MetricsLog(tmp_path)
    log.start(resumed_step=20)
    log.append({"step": 20, "kind": "summary", "train_loss": 1.7})
    log.append({"step": 20, "kind": "final_eval", "eval_loss": 1.6})
    assert [(r["step"], r["kind"]) for r in read_jsonl_rows(tmp_path / "metrics.jsonl")] == [
        (10, "train"), (20, "train"), (20, "summary"), (20, "final_eval")]


def test_on_a_gpu_steps_are_timed_by_cuda_events_read_only_at_a_log(monkeypatch):
    """A torch.cuda.synchronize() at every step end would hold the CPU until the GPU is done, so it
    could not queue the next step meanwhile. Events stamped on the GPU's stream are read at a log."""
    from types import SimpleNamespace

    import plugins.throughput as throughput

    gpu_times = iter([0.0, 1.0, 3.0, 3.2, 10.0, 10.5, 12.0, 12.1])  # seconds, as in the CPU test above
    waits = []

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing
            self.stamp = None

        def record(self):
            self.stamp = next(gpu_times)

        def synchronize(self):
            waits.append(self.stamp)

        def elapsed_time(self, end):
            return (end.stamp - self.stamp) * 1000.0  # milliseconds, as torch.cuda.Event reports

    def no_device_wide_sync():
        raise AssertionError("torch.cuda.synchronize() called")

    fake_cuda = SimpleNamespace(Event=FakeEvent, synchronize=no_device_wide_sync,
                                max_memory_allocated=lambda: 2**30, max_memory_reserved=lambda: 2**31)
    monkeypatch.setattr(throughput, "_cuda", lambda: fake_cuda)
    args = SimpleNamespace(include_num_input_tokens_seen="non_padding")
    callback = throughput.ThroughputCallback()
    waits_at_first_log = []
    first, second = two_log_windows_around_a_pause(
        callback, args, before_first_log=lambda: waits_at_first_log.append(list(waits)))
    assert waits_at_first_log == [[]]  # nothing waited on the GPU during the steps

    assert first["step_time_seconds"] == 1.5 and first["tokens_per_second"] == 100.0
    assert second["step_time_seconds"] == 1.5 and second["tokens_per_second"] == 200.0
    assert first["peak_memory_gib"] == 1.0 and first["peak_reserved_gib"] == 2.0
    assert waits == [3.0, 12.0]  # one wait per log, none per step
    assert next(gpu_times, None) is None


def test_pauses_inside_a_log_window_are_left_out_and_the_steps_around_them_summed(monkeypatch):
    from types import SimpleNamespace

    import plugins.throughput as throughput

    ticks = iter([0.0,          # on_train_begin
                  1.0,          # step 1 ends
                  1.0, 5.0,     # an evaluation and a checkpoint save: 4 s of pause, ending at 5.0
                  7.0,          # step 2 ends: 2 s after the pause
                  7.5])         # its log restarts the clock
    monkeypatch.setattr(throughput, "_cuda", lambda: None)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(ticks))
    args = SimpleNamespace(include_num_input_tokens_seen="non_padding")
    callback = throughput.ThroughputCallback()
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0, log_history=[])
    callback.on_train_begin(args, state, None)
    state.num_input_tokens_seen, state.global_step = 100, 1
    callback.on_step_end(args, state, None)
    callback.on_evaluate(args, state, None)
    callback.on_save(args, state, None)
    state.num_input_tokens_seen, state.global_step = 300, 2
    callback.on_step_end(args, state, None)
    logs = {"loss": 1.0}
    callback.on_log(args, state, None, logs=logs)
    assert logs["step_time_seconds"] == 1.5  # (1 s + 2 s) over 2 steps
    assert logs["tokens_per_second"] == 100.0  # 300 tokens over 3 s
    assert callback.stretches == [[7.5, None]]  # nothing carried over but the open stretch


def test_trls_count_is_read_from_where_train_began(monkeypatch, caplog):
    """TRL's running count starts at 0 with each trainer object and keeps growing if train() runs
    again on it (a notebook, a batch-size retry). Its running value is not public, so after a first
    train() the first window has no token rate rather than a wrong one; the next windows do."""
    from types import SimpleNamespace

    import plugins.throughput as throughput

    ticks = iter([0.0, 2.0, 2.1, 3.0, 4.0, 4.1, 5.1, 5.2, 6.0, 6.1])
    monkeypatch.setattr(throughput, "_cuda", lambda: None)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(ticks))
    args = SimpleNamespace(include_num_input_tokens_seen="no")
    callback = throughput.ThroughputCallback()
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0, log_history=[])
    callback.on_train_begin(args, state, None)                          # 0.0
    state.global_step = 1
    callback.on_step_end(args, state, None)                             # 2.0
    first = {"loss": 1.0, "num_tokens": 200.0}
    callback.on_log(args, state, None, logs=first)                      # 2.1
    assert first["tokens_per_second"] == 100.0  # 200 tokens since train began, over 2 s
    # train() again on the same trainer: TRL's count goes on from where it was (200 + unlogged steps).
    callback.on_train_begin(args, state, None)                          # 3.0
    state.global_step = 2
    callback.on_step_end(args, state, None)                             # 4.0
    second = {"loss": 0.9, "num_tokens": 900.0}
    with caplog.at_level("WARNING", logger="plugins.throughput"):
        callback.on_log(args, state, None, logs=second)                 # 4.1
    assert second["step_time_seconds"] == 1.0 and "tokens_per_second" not in second
    assert caplog.text == ""  # the count is there; only this window's start is unknown
    state.global_step = 3
    callback.on_step_end(args, state, None)                             # 5.1
    third = {"loss": 0.8, "num_tokens": 1000.0}
    callback.on_log(args, state, None, logs=third)                      # 5.2
    assert third["tokens_per_second"] == 100.0  # 100 tokens over 1 s
    # A log with no token count at all: step time only, and one warning that names the fix.
    state.global_step = 4
    callback.on_step_end(args, state, None)                             # 6.0
    fourth = {"loss": 0.7}
    with caplog.at_level("WARNING", logger="plugins.throughput"):
        callback.on_log(args, state, None, logs=fourth)                 # 6.1
    assert "tokens_per_second" not in fourth
    assert "include_num_input_tokens_seen: non_padding" in caplog.text
