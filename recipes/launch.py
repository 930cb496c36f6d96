"""``python -m recipes.launch``: ``accelerate launch`` with the exit a scheduler expects.

It takes exactly ``accelerate launch``'s arguments, e.g.::

    python -m recipes.launch --config_file accelerate_configs/single_gpu.yaml \\
        -m recipes.run recipes/nemotron_fiqa_qlora.yaml

and runs accelerate's own launcher in this process. What it adds is what a job runner
needs and plain ``accelerate launch`` does not do:

- SIGTERM, SIGINT, SIGHUP or SIGUSR1 sent to this process (Kubernetes, Slurm and most job
  runners signal only the launcher) is passed to every training process, and this process
  waits for them, however long their stop takes: they finish the step in progress, write one
  checkpoint and exit (``recipekit.runtime.signals``). The launcher code's own handlers never
  see the signals (accelerate 1.16's would SIGKILL a single worker 5 s after passing it on).
  Plain ``accelerate launch`` on one process differs between versions: 1.15 dies at once and
  leaves its worker to the kernel's parent-death signal; 1.16 passes SIGTERM on and SIGKILLs
  the worker 5 s later. On several processes it gives the workers 30 s before SIGKILL,
  whatever the grace period.
- The exit status is the training processes' own (0, 2 for a recipe or data error, 3 for a
  non-finite loss, 143 after SIGTERM, 130 after Ctrl-C), without the launcher's traceback
  that plain ``accelerate launch`` adds to every non-zero exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psutil

from recipekit.errors import ExitCode
from recipekit.runtime.signals import STOP_SIGNALS, exit_code_for

# Codes a training process ends with on purpose, having already said why in one paragraph.
EXPLAINED_EXIT_CODES = frozenset({*(code for code in ExitCode if code != ExitCode.OK),
                                  *(exit_code_for(s) for s in STOP_SIGNALS)})


def child_pids(parent: int) -> list[int]:
    """The direct children of ``parent``: the training processes, under both of accelerate's
    launchers (one process: a subprocess; several: torch.distributed.run in this process,
    whose workers are its children too)."""
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.NoSuchProcess:
        return []


class SignalForwarder:
    """Takes the stop signals for this process and passes each on to the training processes.

    They are blocked in this process's threads and taken by one thread with ``sigwait``, so no
    handler that the launcher code installs (accelerate 1.16's replaces the SIGTERM handler while
    its child runs, and SIGKILLs the child 5 s later) ever sees them: the training processes
    get every signal and as long as their stop takes. They inherit the blocked mask and unblock
    it when they take over the signals (``recipekit.runtime.signals.StopRequest.install``).
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def forward(self, signum: int) -> None:
        if self.received is None:
            self.received = signum
        for pid in child_pids(os.getpid()):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _wait_and_forward(self) -> None:
        while True:
            self.forward(signal.sigwait(STOP_SIGNALS))

    def install(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        threading.Thread(target=self._wait_and_forward, name="signal-forwarder", daemon=True).start()


def normalized(code: int | None) -> int:
    """Popen reports death by signal N as -N; the shell (and schedulers) as 128 + N."""
    if code is None:
        return 1
    return exit_code_for(-code) if code < 0 else code


def failure_codes(error: BaseException) -> dict[int, int]:
    """Exit status per rank, from the exception accelerate's launcher raised when one failed."""
    if isinstance(error, subprocess.CalledProcessError):
        return {0: normalized(error.returncode)}
    failures = getattr(error, "failures", None)  # torch.distributed.elastic's ChildFailedError
    if isinstance(failures, dict):
        return {int(rank): normalized(f.exitcode) for rank, f in failures.items()}
    return {}


def describe(codes: dict[int, int]) -> str:
    def one(rank: int, code: int) -> str:
        name = f" ({signal.Signals(code - 128).name})" if code > 128 and code - 128 in signal.valid_signals() else ""
        return f"rank {rank} exited with {code}{name}"

    return "; ".join(one(rank, code) for rank, code in sorted(codes.items()))


# A process that ends with SIGKILL was stopped from outside: it could not say why itself.
KILLED = exit_code_for(signal.SIGKILL)


def failure_message(codes: dict[int, int]) -> str:
    """What the launcher says when a training process failed without explaining itself."""
    message = f"recipes.launch: training failed: {describe(codes)}; its output is above."
    if KILLED in codes.values():
        message += (" SIGKILL comes from outside the run, most often from the kernel's out-of-memory killer "
                    "(`dmesg | tail` names the process it killed). To lower the peak, lower "
                    "per_device_train_batch_size and raise gradient_accumulation_steps as much (the same examples "
                    "a step), or lower max_length; then run the same command again to resume.")
    return message


def launch(argv: list[str]) -> int:
    """Run ``accelerate launch ARGV`` here, with the signals passed on; returns the exit status."""
    # torch.distributed.run (several processes) would take the stop signals for itself and kill
    # the workers 30 s later; this process takes them instead (they are blocked for its handlers
    # anyway). Its failure log lines are left out: the training processes say what went wrong,
    # and `describe` names the rest.
    os.environ["PET_SIGNALS_TO_HANDLE"] = "SIGQUIT"  # torchrun's --signals_to_handle
    os.environ.setdefault("LOGLEVEL", "CRITICAL")
    from accelerate.commands.launch import launch_command, launch_command_parser

    forwarder = SignalForwarder()
    forwarder.install()
    args = launch_command_parser().parse_args(argv)
    try:
        launch_command(args)
        code = 0
    except Exception as error:  # noqa: BLE001 - what the launcher raises when a training process fails
        codes = failure_codes(error)
        if not codes:
            raise
        code = max(codes.values())
        if not set(codes.values()) <= EXPLAINED_EXIT_CODES:
            print(failure_message(codes), file=sys.stderr)
    return code


def main() -> int:
    return launch(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
