"""Every command's ending: an error becomes one paragraph on stderr and a named exit status.

A command's body raises :class:`RecipeError` for what the user can fix, or :class:`RunStopped`
when training stopped on purpose; :func:`run_command` prints it (``error: ...`` or
``stopped: ...``) and returns the status, with no traceback. A failed write (a full disk, a
quota, a read-only or failing file system), in whatever form the writing library reports it,
is one policy for every command: one paragraph and ``ExitCode.WRITE_FAULT``. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from recipekit.errors import ExitCode, RecipeError, RunStopped
from recipekit.runtime.io_faults import command_write_fault_message, io_fault


def run_command(body: Callable[[], int | None]) -> int:
    """``body()``'s status (None counts as success), or the status of the error it raised."""
    try:
        return int(body() or ExitCode.OK)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except RunStopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - only failed writes are reported here; the rest re-raises
        if io_fault(exc) is None:
            raise
        print(f"error: {command_write_fault_message(exc)}", file=sys.stderr)
        return ExitCode.WRITE_FAULT
