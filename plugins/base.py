"""The plugin interface: a small class with lifecycle hooks, each a no-op by default.

A recipe names plugins by dotted path::

    plugins:
      - plugins.loss_curves.LossCurves
      - my_package.my_module.MyPlugin

Each is imported before any model or data loads; a wrong path or a failing import stops
the run with a message naming the path and the cause. A plugin may declare its own recipe
keys as a dataclass in ``config_class``: they are validated, typed and overridable on the
command line like every other key (prefix them with the plugin's name to avoid clashes).

Hooks, in the order a run calls them:

1. ``on_recipe_parsed(recipe)``: inspect or adjust the parsed recipe; raise
   ``RecipeError`` for a bad value. Nothing has loaded yet.
2. ``callbacks(recipe)``: ``transformers.TrainerCallback`` objects to add to the trainer.
3. ``on_trainer_ready(trainer, recipe)``: the model, data and trainer exist; training has
   not started.
4. ``on_train_end(trainer, recipe, metrics)``: training finished and the run was saved.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from recipekit.errors import RecipeError

if TYPE_CHECKING:
    from transformers import Trainer, TrainerCallback

    from recipekit.config.recipe import Recipe


class RecipePlugin:
    """Base class of every plugin. Override only the hooks you need."""

    #: Dataclass of the plugin's own recipe keys, or None.
    config_class: ClassVar[type | None] = None
    #: Callbacks of plugins with a lower order run first: producers of metrics (e.g.
    #: throughput) before the writers that export them (e.g. loss curves).
    order: ClassVar[int] = 0

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def on_recipe_parsed(self, recipe: Recipe) -> None:
        """Validate or adjust the recipe before anything loads."""

    def callbacks(self, recipe: Recipe) -> list[TrainerCallback]:
        """Trainer callbacks this plugin contributes."""
        return []

    def on_trainer_ready(self, trainer: Trainer, recipe: Recipe) -> None:
        """Called once the trainer is built, before training."""

    def on_train_end(self, trainer: Trainer, recipe: Recipe, metrics: dict[str, float]) -> None:
        """Called after training and saving, on every process."""


def _import_problem(path: str) -> tuple[type | None, str]:
    """Import ``package.module.Class``; return the class or a sentence saying what went wrong."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        return None, "it is not a dotted path of the form `package.module.ClassName`"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = f"module `{exc.name}` was not found" if exc.name else str(exc)
        return None, (
            f"importing `{module_name}` failed: {where}. Check the spelling, and that the module is installed "
            "or on PYTHONPATH (a module in the current directory is found when you launch from there)"
        )
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the plugin's, report it
        return None, f"importing `{module_name}` raised {type(exc).__name__}: {exc}"
    plugin = getattr(module, attribute, None)
    if plugin is None:
        return None, f"module `{module_name}` has no attribute `{attribute}`"
    if not (isinstance(plugin, type) and issubclass(plugin, RecipePlugin)):
        return None, f"`{attribute}` is not a subclass of plugins.base.RecipePlugin"
    return plugin, ""


def load_plugin_classes(paths: list[str]) -> list[type[RecipePlugin]]:
    """Import every listed plugin; report all the paths that fail at once."""
    classes, problems = [], []
    for path in paths:
        plugin, problem = _import_problem(str(path))
        if plugin is None:
            problems.append(f"plugin `{path}`: {problem}.")
        else:
            classes.append(plugin)
    if problems:
        raise RecipeError(" ".join(problems))
    return classes
