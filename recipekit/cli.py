"""Every command's ending: an error becomes one paragraph on stderr and a named exit status.

A command's body raises :class:`RecipeError` for what the user can fix, or :class:`RunStopped`
when training stopped on purpose; :func:`run_command` prints it (``error: ...`` or
``stopped: ...``) and returns the status, with no traceback. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from recipekit.errors import ExitCode, RecipeError, RunStopped


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
