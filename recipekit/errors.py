"""The exceptions a command turns into one paragraph, and the exit statuses they end with."""

from __future__ import annotations

import enum
import signal


class ExitCode(enum.IntEnum):
    """Every exit status a command of this project ends with on purpose."""

    OK = 0
    USAGE = 2  # a recipe, data, argument or set-up problem: the message says what to change
    NON_FINITE_LOSS = 3  # training stopped at a NaN/inf loss; the last good checkpoint is kept
    HUB_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: the run is finished and saved, its upload to the hub failed
    WRITE_FAULT = 74  # sysexits.h EX_IOERR: a full disk, a quota, a read-only or failing file system
    INTERRUPTED = 128 + signal.SIGINT  # 130, the shell's code for Ctrl-C
    PREEMPTED = 128 + signal.SIGTERM  # 143, the shell's code for a scheduler's SIGTERM


class RecipeError(Exception):
    """A problem the user can fix in a recipe, its data, its plugins or a command's arguments;
    the message names it and says what to do. Ends the command with ``ExitCode.USAGE``."""


class RunStopped(Exception):
    """Training stopped early on purpose (preemption, a non-finite loss, a write fault); carries
    the exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
