"""SIGTERM and SIGINT as schedulers and people send them: to the launcher, to a worker, or to
the whole process group. Each ends the same way: one checkpoint at the end of the step in
progress, the manifest saying how the run ended, no process left, exit 143 (130 for SIGINT),
no traceback. A test plugin holds training at a chosen step until the signal has arrived,
so the step the run stops at is known."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipekit.runtime.signals import StopBeforeTraining, StopRequest
from recipes.launch import child_pids
from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")
CONFIGS = REPO_ROOT / "accelerate_configs"
HOLD_STEP = 25

HOLD = '''
"""Holds every rank at step HOLD_STEP (after its stop check) until a signal came, or a release file."""
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from plugins.base import RecipePlugin
from recipekit.runtime.signals import STOP


class _Hold(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != HOLD_STEP:
            return
        Path(f"held-rank{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not STOP.requested and not Path("release").exists() and time.time() < deadline:
            time.sleep(0.05)
        if STOP.requested:  # the rest of a long step or evaluation pass, before the stop checkpoint
            time.sleep(float(os.environ.get("STOP_TAKES_SECONDS", "0")))


class Hold(RecipePlugin):
    def callbacks(self, recipe):
        return [_Hold()]
'''.replace("HOLD_STEP", str(HOLD_STEP))


def environment(work: Path, processes: int, stop_takes: float = 0) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "STOP_TAKES_SECONDS": str(stop_takes),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(work)]), "OMP_NUM_THREADS": "1"}
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def start(work: Path, launcher: str, processes: int = 1, *overrides: str, stop_takes: float = 0) -> subprocess.Popen:
    """The smoke recipe with the hold plugin, under ``recipes.launch``, plain ``accelerate
    launch``, or no launcher (``python -m recipes.run``)."""
    (work / "hold.py").write_text(HOLD)
    config = CONFIGS / ("cpu.yaml" if processes == 1 else "cpu_multi_process.yaml")
    program = {"recipes.launch": ["-m", "recipes.launch"], "accelerate": ["-m", "accelerate.commands.launch"]}
    recipe = ["-m", "recipes.run", SMOKE, "--plugins", "hold.Hold", "plugins.loss_curves.LossCurves", *overrides]
    if launcher == "none":
        command = [sys.executable, *recipe]
    else:
        command = [sys.executable, *program[launcher], "--config_file", str(config), "--num_processes",
                   str(processes), "--num_cpu_threads_per_process", "1", *recipe]
    return subprocess.Popen(command, cwd=work, env=environment(work, processes, stop_takes), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_until_held(work: Path, process: subprocess.Popen, ranks: int = 1, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not all((work / f"held-rank{r}").exists() for r in range(ranks)):
        if process.poll() is not None:
            pytest.fail(f"the run ended before step {HOLD_STEP}: {process.communicate()[1][-3000:]}")
        assert time.time() < deadline, "the run never reached the held step"
        time.sleep(0.1)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def wait_until_gone(pid: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not gone(pid):
        assert time.time() < deadline, f"the worker {pid} is still running"
        time.sleep(0.2)


def finish(work: Path, process: subprocess.Popen) -> tuple[int, str]:
    (work / "release").write_text("")  # ranks that got no signal wait for the others' stop
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def assert_stopped_once(work: Path, err: str, status: str) -> None:
    run = work / "runs" / "smoke"
    stop_step = HOLD_STEP + 1  # held after step 25's check: the stop lands at the end of step 26
    checkpoint = run / f"checkpoint-{stop_step}"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == stop_step
    later = [p for p in run.glob("checkpoint-*") if int(p.name.split("-")[1]) > stop_step]
    assert later == [], "trained past the stop"
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == status and manifest["stopped_at_step"] == stop_step
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "signum", "code", "status"),
    [
        ("launcher", signal.SIGTERM, 143, "preempted"),
        ("launcher", signal.SIGINT, 130, "interrupted"),
        ("worker", signal.SIGTERM, 143, "preempted"),
        ("group", signal.SIGTERM, 143, "preempted"),
    ],
)
def test_recipes_launch_stops_once_whoever_gets_the_signal(tmp_path, target, signum, code, status):
    process = start(tmp_path, "recipes.launch")
    wait_until_held(tmp_path, process)
    workers = child_pids(process.pid)
    assert len(workers) == 1
    if target == "launcher":
        os.kill(process.pid, signum)
    elif target == "worker":
        os.kill(workers[0], signum)
    else:
        os.killpg(process.pid, signum)  # the launcher was started as its own group's leader
    returncode, err = finish(tmp_path, process)
    assert returncode == code, err[-3000:]
    assert f"{signal.Signals(signum).name} received: stopped at step {HOLD_STEP + 1}" in err
    assert_stopped_once(tmp_path, err, status)
    assert all(gone(pid) for pid in workers)


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_when_only_the_launcher_is_signalled(tmp_path):
    process = start(tmp_path, "recipes.launch", 2)
    wait_until_held(tmp_path, process, ranks=2)
    workers = child_pids(process.pid)
    assert len(workers) == 2
    os.kill(process.pid, signal.SIGTERM)
    returncode, err = finish(tmp_path, process)
    assert returncode == 143, err[-3000:]
    assert_stopped_once(tmp_path, err, "preempted")
    assert all(gone(pid) for pid in workers)


@pytest.mark.slow
def test_two_processes_stop_together_when_one_worker_is_signalled(tmp_path):
    process = start(tmp_path, "recipes.launch", 2)
    wait_until_held(tmp_path, process, ranks=2)
    rank1 = int((tmp_path / "held-rank1").read_text())
    os.kill(rank1, signal.SIGTERM)
    returncode, err = finish(tmp_path, process)
    assert returncode == 143, err[-3000:]
    assert_stopped_once(tmp_path, err, "preempted")


@pytest.mark.slow
def test_plain_accelerate_launch_killed_alone_leaves_no_worker_training(tmp_path):
    """Plain `accelerate launch` (one process) either dies at SIGTERM without passing it on
    (accelerate 1.15: its worker then gets SIGTERM from the kernel, PR_SET_PDEATHSIG) or passes
    it on and waits a few seconds (1.16: exit 143). Either way the worker stops like a preemption."""
    process = start(tmp_path, "accelerate")
    wait_until_held(tmp_path, process)
    (worker,) = child_pids(process.pid)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) in (-signal.SIGTERM, 143)
    wait_until_gone(worker)
    run = tmp_path / "runs" / "smoke"
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "preempted" and (run / f"checkpoint-{HOLD_STEP + 1}" / "trainer_state.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("signals", [1, 2], ids=["one SIGTERM", "two 0.3 s apart"])
def test_a_stop_longer_than_any_launchers_grace_period_still_checkpoints(tmp_path, signals):
    """The stop takes 8 s, longer than the 5 s accelerate 1.16's launcher gives a worker before
    SIGKILL: under recipes.launch no launcher code sees the signal, so the stop finishes."""
    process = start(tmp_path, "recipes.launch", stop_takes=8)
    wait_until_held(tmp_path, process)
    for _ in range(signals):
        os.kill(process.pid, signal.SIGTERM)
        time.sleep(0.3)
    returncode, err = finish(tmp_path, process)
    assert returncode == 143, err[-3000:]
    assert f"SIGTERM received: stopped at step {HOLD_STEP + 1}" in err
    assert_stopped_once(tmp_path, err, "preempted")


@pytest.mark.slow
@pytest.mark.parametrize(("target", "signum"), [("launcher", signal.SIGHUP), ("launcher", signal.SIGUSR1),
                                                ("group", signal.SIGHUP)])
def test_a_hangup_or_a_schedulers_warning_stops_like_a_preemption(tmp_path, target, signum):
    process = start(tmp_path, "recipes.launch")
    wait_until_held(tmp_path, process)
    if target == "launcher":
        os.kill(process.pid, signum)
    else:
        os.killpg(process.pid, signum)
    returncode, err = finish(tmp_path, process)
    assert returncode == 128 + signum, err[-3000:]
    assert_stopped_once(tmp_path, err, "preempted")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["recipes.launch", "accelerate"])
def test_a_launcher_killed_outright_leaves_a_worker_that_checkpoints_and_says_so(tmp_path, launcher):
    """kill -9 of the launcher: the worker gets its parent-death SIGTERM and its output pipe to the
    launcher is gone; it still checkpoints and records the stop instead of dying of a BrokenPipeError."""
    process = start(tmp_path, launcher)
    wait_until_held(tmp_path, process)
    (worker,) = child_pids(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    wait_until_gone(worker)
    run = tmp_path / "runs" / "smoke"
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "preempted" and manifest["stopped_at_step"] == HOLD_STEP + 1
    assert (run / f"checkpoint-{HOLD_STEP + 1}" / "trainer_state.json").is_file()


def test_a_signal_before_training_ends_in_one_line_with_the_signal_status(tmp_path):
    process = start(tmp_path, "none")
    time.sleep(2)  # importing and loading: nothing to save yet
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not (tmp_path / "runs" / "smoke" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_recipes_launch_passes_on_the_exit_status_of_a_bad_recipe_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 3\n")
    env = environment(tmp_path, 1)
    done = subprocess.run([sys.executable, "-m", "recipes.launch", "--config_file", str(CONFIGS / "cpu.yaml"),
                           "--num_cpu_threads_per_process", "1", "-m", "recipes.run", str(bad)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "`learning_rate` is 3" in done.stderr and "Traceback" not in done.stderr


def test_stop_request_phases():
    """Preparing: stop now (nothing to save). Training: only the flag. Finishing: ignored."""
    request = StopRequest()
    with pytest.raises(StopBeforeTraining) as stopped:
        request._handle(signal.SIGTERM, None)
    assert stopped.value.code == 143 and request.signum == signal.SIGTERM
    request._handle(signal.SIGINT, None)  # a second signal while unwinding: ignored
    assert request.signum == signal.SIGTERM

    request.reset()
    request.training_started()
    request._handle(signal.SIGINT, None)
    assert request.requested and request.signum == signal.SIGINT and request.phase == "training"
    request.finishing()
    request._handle(signal.SIGTERM, None)  # torchrun's SIGTERM to a rank still saving
    assert request.signum == signal.SIGINT


def test_after_a_stop_the_signals_stay_ignored_until_the_process_exits():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    request = StopRequest()
    try:
        request.install()
        request.release()
        assert {s: signal.getsignal(s) for s in previous} == previous  # a normal end gives them back
        request.install()
        request.training_started()
        request._handle(signal.SIGTERM, None)
        request.release()
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in previous)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_process_killed_from_outside_is_named_with_the_likely_cause_and_the_fix():
    """SIGKILL (the out-of-memory killer's signal) leaves the training process no word of its own: the
    launcher names it, says where to look, and which recipe keys lower the peak."""
    import subprocess

    from recipes.launch import failure_codes, failure_message

    codes = failure_codes(subprocess.CalledProcessError(-9, ["python", "-m", "recipes.run"]))
    assert codes == {0: 137}
    message = failure_message(codes)
    assert "rank 0 exited with 137 (SIGKILL)" in message and "out-of-memory killer" in message
    assert "per_device_train_batch_size" in message and "gradient_accumulation_steps" in message
    assert "out-of-memory" not in failure_message({0: 1, 1: 1})  # any other failure: its own output says why
