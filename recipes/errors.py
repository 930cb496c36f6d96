"""The one exception type for problems a user can fix in a recipe, its data or its plugins."""


class RecipeError(Exception):
    """A recipe problem the user can fix; the message names it and says what to do."""
