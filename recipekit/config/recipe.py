"""A parsed recipe (its three typed configs and the keys the user set), and how its values are
recorded: as plain YAML-safe values, so ``recipe.yaml`` and the run manifest read back the same.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipekit.config.arguments import RecipeArguments


def field_default(spec: dataclasses.Field) -> Any:
    """A dataclass field's default value (MISSING when it has none)."""
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return dataclasses.MISSING


def to_plain(value: Any) -> Any:
    """Make a config value YAML-safe (enums to their value, paths to text, and the settings objects
    transformers builds from a dict, such as ``accelerator_config``, back to a dict of the values set)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Only the fields set away from their defaults: what the recipe said, stable when a later
        # transformers adds a field, and parsed back into the same object.
        return to_plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)
                         if getattr(value, f.name) != field_default(f)})
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


@dataclass
class Recipe:
    """A parsed recipe: the three typed configs and the keys the user set, as resolved."""

    path: Path
    recipe: RecipeArguments
    training: Any  # trl.SFTConfig
    model: Any  # trl.ModelConfig
    resolved: dict[str, Any]
    plugins: list = field(default_factory=list)  # plugins.base.RecipePlugin instances

    @property
    def name(self) -> str:
        return self.recipe.recipe_name or self.path.stem
