"""Stop signals in a training process: one checkpoint, a clear status, the right exit code.

Schedulers (Slurm, Kubernetes, job runners) send SIGTERM before they preempt; people press
Ctrl-C (SIGINT). Both end the same way: the step in progress finishes, one checkpoint is
written, the manifest says ``preempted`` (SIGTERM) or ``interrupted`` (SIGINT), and the
process exits 143 or 130 without a traceback. How a signal is handled depends on the phase:

- *preparing* (model and data loading): nothing is worth saving yet, so the signal stops the
  process at once, as :class:`StopBeforeTraining`, which ``recipes.run`` reports in one line;
- *training*: only a flag is set; ``recipekit.runtime.guards.PreemptionCallback`` checks it at the end
  of every optimizer step and asks the trainer to save and stop;
- *finishing* (after the stop was granted, or after training ended): further signals are
  ignored, so a second SIGTERM (torchrun sends one to ranks still saving) or a doubled Ctrl-C
  cannot kill the process half-way through writing its checkpoint and status.

Under a launcher, the process also asks the kernel for a SIGTERM when its launcher dies
(``PR_SET_PDEATHSIG``), so a worker never trains on, orphaned, beside the next run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

# The signals that stop a run like a preemption: a scheduler's SIGTERM, a person's Ctrl-C, a
# closed terminal or ssh session (SIGHUP), and the early warning some schedulers send (Slurm's
# `--signal=USR1@300`). Each ends with one checkpoint and exit status 128 + its number.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
_PR_SET_PDEATHSIG = 1
_launcher_pid: int | None = None  # the parent that launched this process, when one did


class StopBeforeTraining(SystemExit):
    """A stop signal arrived before training began: nothing to checkpoint.

    A ``SystemExit`` carrying 128 + the signal's number: library code that catches
    ``Exception`` while loading a model cannot turn it into another error, and even raised
    during the imports, before ``recipes.run.main`` can report it, it ends the process with
    the right status and no traceback."""

    def __init__(self, signum: int) -> None:
        super().__init__(exit_code_for(signum))
        self.signum = signum


def exit_code_for(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (143, 130)."""
    return 128 + int(signum)


def status_for(signum: int) -> str:
    """The manifest status: a person's Ctrl-C interrupts; every other stop signal preempts."""
    return "interrupted" if signum == signal.SIGINT else "preempted"


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequest:
    """The process-wide stop request: which signal came (if any), and the handling phase."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase = "preparing"
        self._previous: dict[int, object] = {}

    def reset(self) -> None:
        """A new run in the same process (a notebook, the tests) starts with no request."""
        self.signum, self.phase = None, "preparing"

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if _launcher_pid is not None and os.getppid() != _launcher_pid:
            _detach_output()  # the launcher died (this is its death signal): nobody reads our pipes now
        if self.signum is None:
            self.signum = signum
        if self.phase == "preparing":
            self.phase = "finishing"  # a second signal while unwinding is ignored
            raise StopBeforeTraining(signum)

    def install(self) -> bool:
        """Take over the stop signals; False where signals cannot be handled (not the main thread).

        ``recipes.launch`` blocks them in its own process and its children inherit that mask, so
        they are unblocked here: one that came meanwhile is handled now."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in STOP_SIGNALS:
            if signum not in self._previous:
                self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return True

    def release(self) -> None:
        """At the end of a run: give the signals back to whoever had them (a notebook's Ctrl-C,
        the default), except after a stop, when they stay ignored until the process exits, so
        that a late second signal cannot turn a clean exit into a kill."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if self.requested else previous)

    def training_started(self) -> None:
        """From now on a signal only sets the flag; the step in progress finishes first."""
        if self.phase == "preparing":
            self.phase = "training"

    def finishing(self) -> None:
        """Stopping or done training: signals no longer interrupt anything."""
        self.phase = "finishing"


STOP = StopRequest()


def die_with_launcher() -> None:
    """Ask the kernel for SIGTERM when the launcher that started this process dies (Linux only).

    A launcher killed outright (SIGKILL, or a SIGTERM that the plain ``accelerate launch``
    does not pass on) would otherwise leave this worker training on, orphaned. The SIGTERM
    it gets instead ends it like a preemption: one checkpoint, then exit.
    """
    launched = "LOCAL_RANK" in os.environ or any(k.startswith("ACCELERATE_") for k in os.environ)
    if not launched or not sys.platform.startswith("linux"):
        return
    global _launcher_pid
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    _launcher_pid = parent
    if os.getppid() != parent:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _detach_output() -> None:
    """Point stdout and stderr at /dev/null. A launcher that reads this process's output through a
    pipe (accelerate 1.16 does, for stderr) and died would turn the next progress bar or log line
    into a BrokenPipeError, killing the stop it should let finish; the run manifest records the end."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def any_process_signal(signum: int | None) -> int | None:
    """The stop signal any process received (the highest number, so SIGTERM outranks SIGINT),
    on every process: all ranks must stop at the same step, with the same status, or the
    others would wait forever in the next collective."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return signum
    from accelerate import PartialState

    value = torch.tensor([signum or 0], device=PartialState().device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item()) or None
