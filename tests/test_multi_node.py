"""Two machines rehearsed on one: `accelerate_configs/multi_node.yaml` launched twice on this host,
machine_rank 0 and 1 meeting at 127.0.0.1, trains the smoke recipe on the CPU as one process group
of two, writes one run, and reproduces one process with the same effective batch step for step.

Each launcher is what one machine runs: accelerate's torch.distributed launcher (static
rendezvous, node rank = machine_rank) with one worker. ``ACCELERATE_USE_CPU=true`` puts the
workers on the CPU over gloo, as in `tests/test_multi_process.py`. The two "machines" share the
working directory, as real ones share the run's storage (docs/scaling.md says why they must).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes.launch import child_pids
from tests.conftest import REPO_ROOT
from tests.test_multi_process import WRITE_AUDIT, history

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")
MULTI_NODE = str(REPO_ROOT / "accelerate_configs" / "multi_node.yaml")
ONE_CPU = str(REPO_ROOT / "accelerate_configs" / "cpu.yaml")

# Every optimizer step must see the same 8 examples on both sides. The fixture's 38 training rows
# leave a short last batch each epoch; under DDP accelerate fills it up with rows from the start of
# the epoch (`even_batches`) and one process does not, so the last batch is dropped on both sides.
# The 6 validation rows split evenly as 2 x 3, and drop_last (which applies to evaluation too)
# keeps all of them. 2 epochs of 4 steps: one checkpoint, at the end (checkpoint-8).
SAME_BATCHES = ["--num_train_epochs", "2", "--dataloader_drop_last", "true", "--per_device_eval_batch_size", "3",
                "--logging_steps", "1"]

# float32 sums the same per-token losses in another order: two half-batch gradients all-reduced
# against one batch. Measured: at most 1.5e-7 relative over the 8 steps. A different example in
# one step (the short batch above, not dropped) moves the loss by 2.5e-4; gradients summed
# instead of averaged double grad_norm.
REL = 1e-5

# Records, per training process, which group it joined: written at the start of training.
RANK_REPORT = """
import json
import os
import signal
from pathlib import Path

import torch.distributed
from transformers import TrainerCallback

from plugins.base import RecipePlugin


class _Report(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        joined = torch.distributed.is_initialized()
        record = {
            "rank": torch.distributed.get_rank() if joined else 0,
            "world_size": torch.distributed.get_world_size() if joined else 1,
            "backend": torch.distributed.get_backend() if joined else None,
            "node_rank": int(os.environ.get("GROUP_RANK", "-1")),  # torch.distributed.run's node rank
            "launcher_pid": os.getppid(),
        }
        Path(f"process-{os.getpid()}.json").write_text(json.dumps(record))


class RankReport(RecipePlugin):
    def callbacks(self, recipe):
        return [_Report()]
"""


def free_port() -> int:
    """A port nothing listens on now, for machine 0's rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(name: str, work: Path, logs: Path, launcher: list[str], *overrides: str) -> subprocess.Popen:
    """``accelerate launch LAUNCHER -m recipes.run smoke.yaml OVERRIDES`` in ``work``, its output in
    ``logs/NAME.out`` and ``.err`` (files, not pipes: nobody reads a pipe while three processes run)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(logs.parent)])}
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "-m", "recipes.run", SMOKE, *overrides]
    with (logs / f"{name}.out").open("w") as out, (logs / f"{name}.err").open("w") as err:
        return subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=err)


def wait_all(processes: dict[str, subprocess.Popen], timeout: float) -> None:
    """Wait until all have exited, one has failed (a machine whose peer died waits for it for ever),
    or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [p.poll() for p in processes.values()]
        if all(code is not None for code in codes) or any(code not in (None, 0) for code in codes):
            return
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> bool:
    """Kill a launcher still running, and its workers first: torch.distributed.run starts them in
    sessions of their own, so they would outlive it. True if it had to."""
    if process.poll() is not None:
        return False
    for pid in child_pids(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.kill()
    process.wait()
    return True


def log(logs: Path, name: str) -> str:
    return (logs / f"{name}.out").read_text() + (logs / f"{name}.err").read_text()[-4000:]


@pytest.mark.slow
def test_two_machines_on_localhost_train_as_one_group_like_one_process(tmp_path):
    nodes, one, logs = tmp_path / "nodes", tmp_path / "one", tmp_path / "logs"
    for folder in (nodes, one, logs):
        folder.mkdir()
    (tmp_path / "audit.py").write_text(WRITE_AUDIT)
    (tmp_path / "ranks.py").write_text(RANK_REPORT)
    port = str(free_port())
    plugins = ["--plugins", "plugins.throughput.Throughput", "plugins.loss_curves.LossCurves", "audit.WriteAudit",
               "ranks.RankReport"]

    processes: dict[str, subprocess.Popen] = {}
    killed: list[str] = []
    started = time.monotonic()
    try:
        for rank in (0, 1):  # the command each machine runs; only --machine_rank differs
            node = ["--config_file", MULTI_NODE, "--num_processes", "2", "--machine_rank", str(rank),
                    "--main_process_ip", "127.0.0.1", "--main_process_port", port]
            processes[f"node{rank}"] = start(f"node{rank}", nodes, logs, node, *SAME_BATCHES, *plugins)
        processes["one"] = start("one", one, logs, ["--config_file", ONE_CPU], *SAME_BATCHES,
                                 "--per_device_train_batch_size", "8")
        wait_all(processes, timeout=300)
    finally:
        killed = [name for name, process in processes.items() if stop(process)]
    print(f"two machines and one process, side by side: {time.monotonic() - started:.1f}s")
    for name, process in processes.items():  # the one that failed first; the others were stopped after it
        if name not in killed:
            assert process.returncode == 0, f"{name} exited {process.returncode}, stopped {killed}:\n{log(logs, name)}"
    assert not killed, f"still running after 300 s, killed: {killed}\n" + "\n".join(log(logs, n) for n in killed)

    # One group of two, one process per machine, each started by its own machine's launcher.
    records = sorted((json.loads(p.read_text()) for p in nodes.glob("process-*.json")), key=lambda r: r["rank"])
    assert [(r["rank"], r["world_size"], r["backend"], r["node_rank"]) for r in records] == [
        (0, 2, "gloo", 0), (1, 2, "gloo", 1)]
    assert [r["launcher_pid"] for r in records] == [processes["node0"].pid, processes["node1"].pid]
    batch = "world size 2; effective batch 8 examples (per device 4 x accumulation 1 x processes 2)"
    for rank in (0, 1):
        assert batch in (logs / f"node{rank}.out").read_text()  # each machine's log says so
    assert "world size 1; effective batch 8 examples (per device 8 x accumulation 1 x processes 1)" in (
        logs / "one.out").read_text()

    # One run: the main process wrote it; the process on machine 1 wrote none of the project's files.
    run = nodes / "runs" / "smoke"
    main_writes = {Path(w).name for w in (nodes / "writes-rank0.txt").read_text().split()}
    assert {"metrics.jsonl", "loss.png", "recipe.yaml", "run_manifest.json", "README.md"} <= main_writes
    other = nodes / "writes-rank1.txt"
    assert not other.exists() or not other.read_text().split(), other.read_text()
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("adapter_model.safetensors")) == [
        "adapter_model.safetensors", "checkpoint-8/adapter_model.safetensors"]  # the final adapter and the checkpoint's
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-8"]
    assert sorted(p.name for p in (run / "checkpoint-8").glob("rng_state_*.pth")) == ["rng_state_0.pth",
                                                                                      "rng_state_1.pth"]
    manifest = json.loads((run / "run_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["hardware"]["world_size"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 9))  # each step logged once
    for rank in (0, 1):  # both left the group closed: machine 1 did not leave while machine 0 still wrote
        assert (nodes / f"group-at-exit-rank{rank}.txt").read_text() == "False"

    # The same training as one process taking the same 8 examples per step.
    steps_two = [h for h in history(run) if "loss" in h]
    steps_one = [h for h in history(one / "runs" / "smoke") if "loss" in h]
    assert [h["step"] for h in steps_two] == [h["step"] for h in steps_one] == list(range(1, 9))
    for two_step, one_step in zip(steps_two, steps_one):
        assert two_step["num_input_tokens_seen"] == one_step["num_input_tokens_seen"]  # the same examples
        assert two_step["loss"] == pytest.approx(one_step["loss"], rel=REL), two_step["step"]
        assert two_step["grad_norm"] == pytest.approx(one_step["grad_norm"], rel=REL), two_step["step"]
    eval_two = json.loads((run / "all_results.json").read_text())["eval_loss"]
    eval_one = json.loads((one / "runs" / "smoke" / "all_results.json").read_text())["eval_loss"]
    assert eval_two == pytest.approx(eval_one, rel=REL)
