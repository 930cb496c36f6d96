"""One run per output directory: a lock file that names its owner and goes stale when the owner dies.

Two runs writing into one ``output_dir`` would both report success while one's adapter and
metrics overwrite the other's. The first run creates ``.run.lock`` (atomically) with its pid,
host and start time; a second is refused at once with those three. A lock whose owner is
gone must not block the next run forever: on the same host a dead pid frees it at once, and so
does a live pid that is another process now (its start time since boot, or the boot itself,
differs from the lock's: a requeued job in a new container often gets the same small pid);
from another host (a shared filesystem), a lock whose heartbeat (its mtime, touched at every
log) is older than ``STALE_AFTER_SECONDS`` is taken over, and the run says so.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from recipekit.errors import RecipeError

LOCK_NAME = ".run.lock"
STALE_AFTER_SECONDS = 15 * 60


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (Linux); None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same_process(owner: dict, pid: int) -> bool:
    """Whether the live ``pid`` is still the process that wrote the lock (when the lock says so)."""
    recorded_boot, recorded_start = owner.get("boot_id"), owner.get("process_start")
    if recorded_boot is not None and recorded_boot != _boot_id():
        return False
    return recorded_start is None or recorded_start == _process_start(pid)


def _stale_reason(owner: dict, age_seconds: float) -> str | None:
    """Why a lock can be taken over, or None while its owner may still be running."""
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        if not isinstance(pid, int) or not _pid_alive(pid):
            return f"its process {pid} on this host is gone"
        if not _same_process(owner, pid):
            return f"pid {pid} on this host is another process now (the lock's owner is gone)"
        return None
    if age_seconds > STALE_AFTER_SECONDS:
        return f"its heartbeat is {age_seconds / 60:.0f} min old"
    return None


def _read_owner(path: Path) -> tuple[dict, float]:
    """The lock's owner record and its heartbeat's age; ``{}`` for a torn, unreadable or foreign
    lock (whoever wrote it did not finish, or it is not one this project writes)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError, RecursionError):
        return {}, float("inf")
    return (owner if isinstance(owner, dict) else {}), age


class RunLock:
    """``acquire()`` before anything is written into ``output_dir``; ``release()`` when the run ends."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self.held = False
        self.created_dir = False  # an output dir made only for the lock is removed again if left empty
        self.took_over: str | None = None  # why an earlier run's lock was taken over, for the log

    def acquire(self) -> None:
        self.created_dir = not self.path.parent.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create()
        except OSError as exc:  # read-only, no permission, a file where the folder should be, disk full
            raise RecipeError(
                f"`output_dir` {self.path.parent} cannot be written ({exc.strerror or exc}). Choose a folder you can "
                "write to, or fix its permissions, before anything is loaded."
            ) from None

    def _create(self) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "boot_id": _boot_id(), "process_start": _process_start(os.getpid())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            self.held = True
            return
        raise RecipeError(f"could not take the run lock {self.path}; another run took it at the same moment.")

    def _take_over_if_stale(self) -> None:
        owner, age = _read_owner(self.path)
        reason = _stale_reason(owner, age) if owner else "it is unreadable"
        if reason is None:
            raise RecipeError(
                f"another run is writing into {self.path.parent}: pid {owner.get('pid')} on {owner.get('host')}, "
                f"started {owner.get('started')}. Wait for it, stop it, or choose another `output_dir`. If that "
                f"run is gone, delete {self.path}."
            )
        self.took_over = f"took over the lock of an earlier run (pid {owner.get('pid')}, {owner.get('host')}): {reason}"
        self.path.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        if self.held:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Remove the lock; on a disk that no longer takes writes (full, remounted read-only) leave it:
        its owner's death makes it stale, and raising here would hide why the run stopped."""
        if not self.held:
            return
        self.held = False
        try:
            self.path.unlink(missing_ok=True)
            if self.created_dir and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()  # a run refused before writing anything leaves nothing behind
        except OSError:
            pass


def live_run_in(output_dir: str | Path) -> str | None:
    """Who is training into ``output_dir`` now ("pid N on HOST, started T"), or None when no live
    run holds its lock: for the commands that read a finished run (evaluate, generate, merge),
    whose adapter such a run replaces when it ends."""
    owner, age = _read_owner(Path(output_dir) / LOCK_NAME)
    if not owner or _stale_reason(owner, age) is not None:
        return None
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"


def acquire_run_lock(output_dir: str | Path) -> RunLock:
    """Take the lock on the main process; every process raises if it was refused, so none goes on alone."""
    from accelerate import PartialState

    from recipekit.runtime.guards import any_process

    lock = RunLock(output_dir)
    problem = None
    if PartialState().is_main_process:
        try:
            lock.acquire()
        except RecipeError as exc:
            problem = str(exc)
    if any_process(problem is not None):
        lock.release()
        raise RecipeError(problem or f"the main process was refused the run lock {lock.path} (its message says why).")
    if lock.took_over:
        PartialState().print(lock.took_over)
    return lock
