"""One run per output directory: a second run is refused at once and told who holds the directory;
a lock left by a run that died does not block the next one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SMOKE = str(REPO_ROOT / "recipes" / "smoke.yaml")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder, pid: int, host: str, age_seconds: float = 0.0):
    from recipekit.rundir.lock import LOCK_NAME

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host, "started": "2026-11-30T06:00:00+00:00"}))
    if age_seconds:
        stamp = time.time() - age_seconds
        os.utime(path, (stamp, stamp))
    return path


def test_a_second_lock_on_the_same_directory_is_refused_naming_the_first(tmp_path):
    from recipekit.errors import RecipeError
    from recipekit.rundir.lock import RunLock

    first = RunLock(tmp_path / "run")
    first.acquire()
    with pytest.raises(RecipeError) as refused:
        RunLock(tmp_path / "run").acquire()
    message = str(refused.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "started 20" in message
    first.release()
    RunLock(tmp_path / "run").acquire()  # free again once released


@pytest.mark.parametrize(
    ("owner", "age", "taken"),
    [("dead-pid-here", 0, True), ("live-pid-elsewhere", 60, False), ("live-pid-elsewhere", 3600, True)],
)
def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path, owner, age, taken):
    from recipekit.errors import RecipeError
    from recipekit.rundir.lock import RunLock

    pid, host = (dead_pid(), socket.gethostname()) if owner == "dead-pid-here" else (1, "another-node")
    write_lock(tmp_path / "run", pid, host, age)
    lock = RunLock(tmp_path / "run")
    if taken:
        lock.acquire()
        assert lock.took_over and f"pid {pid}" in lock.took_over
    else:
        with pytest.raises(RecipeError, match="another run is writing into"):
            lock.acquire()


@pytest.mark.parametrize(("identity", "taken"), [("same", False), ("reused pid", True), ("rebooted", True)])
def test_a_lock_whose_pid_is_now_another_process_is_taken_over(tmp_path, identity, taken):
    """A requeued job in a new container often gets the pid its dead predecessor had: the pid is
    alive, but it is not the lock's owner, told by its start time since boot (or the boot)."""
    from recipekit.errors import RecipeError
    from recipekit.rundir.lock import LOCK_NAME, RunLock

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        RunLock(tmp_path / "run").acquire()  # a lock as a run writes it, then its owner becomes `alive`
        path = tmp_path / "run" / LOCK_NAME
        owner = json.loads(path.read_text())
        start = Path(f"/proc/{alive.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        owner.update(pid=alive.pid, process_start=start)
        if identity == "reused pid":
            owner["process_start"] = str(int(start) - 1000)
        elif identity == "rebooted":
            owner["boot_id"] = "another-boot"
        path.write_text(json.dumps(owner))
        lock = RunLock(tmp_path / "run")
        if taken:
            lock.acquire()
            assert f"pid {alive.pid} on this host is another process now" in lock.took_over
        else:
            with pytest.raises(RecipeError, match="another run is writing into"):
                lock.acquire()
    finally:
        alive.kill()
        alive.wait()


def test_a_run_into_a_busy_output_dir_exits_2_and_touches_nothing(tmp_path, capsys, monkeypatch):
    from recipes.run import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "smoke"
    lock = write_lock(out, os.getpid(), socket.gethostname())  # this test process: alive
    assert main([SMOKE]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: another run is writing into") and f"pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == [lock.name]  # nothing written beside the lock


@pytest.mark.slow
def test_a_run_after_a_killed_one_takes_over_its_lock_and_finishes(tmp_path, capsys, monkeypatch):
    from recipekit.rundir.lock import LOCK_NAME
    from recipes.run import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "smoke"
    write_lock(out, dead_pid(), socket.gethostname())
    assert main([SMOKE, "--num_train_epochs", "1"]) == 0
    assert "took over the lock of an earlier run" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").is_file() and not (out / LOCK_NAME).exists()  # released at the end
