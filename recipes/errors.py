"""The one exception type for problems a user can fix in a recipe, its data or its plugins."""


class RecipeError(Exception):
    """A recipe problem the user can fix; the message names it and says what to do."""


class RunStopped(Exception):
    """Training stopped early on purpose (preemption, a non-finite loss); carries the exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
