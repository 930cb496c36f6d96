"""Every recipe key with its types, choices, default and help, as data that loads in milliseconds.

A recipe's keys are the dataclass fields of this project's ``RecipeArguments``, TRL's
``SFTConfig`` (which holds transformers' ``TrainingArguments``) and ``ModelConfig``, and the
built-in plugins' configs. Reading them from those classes means importing torch,
transformers and TRL (seconds); a misspelt key or ``--help`` should answer faster than
that. So the fields are read once, with ``dataclasses.fields``, into
``recipekit/config/recipe_keys.json``, and ``recipekit.config.parse`` checks recipes against that file.
``python -m recipekit.config.schema`` rewrites it; ``tests/test_key_schema.py`` fails when it no
longer equals what the installed (pinned) TRL and transformers declare.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).resolve().parent / "recipe_keys.json"
# Plugins shipped with the project: their keys are in the schema file, so a recipe that uses
# them is checked without importing them (they import transformers).
BUILTIN_PLUGINS = (
    "plugins.loss_curves.LossCurves",
    "plugins.throughput.Throughput",
    "plugins.generation_eval.GenerationEval",
)
# Where the project's default differs from the library's (every recipe here trains an adapter).
PROJECT_DEFAULTS = {"use_peft": True}


@dataclass(frozen=True)
class KeySpec:
    """One recipe key: which config holds it, which kinds of value it takes, and its help."""

    name: str
    owner: str  # "RecipeArguments", "SFTConfig", "ModelConfig" or a plugin's dotted path
    kinds: tuple[str, ...]  # among bool, int, float, str, list, dict, null, object
    choices: tuple[str, ...] | None
    default: Any  # as JSON holds it: enums by value, other objects by repr
    help: str

    def as_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "kinds": list(self.kinds), "choices": list(self.choices) if self.choices else None,
                "default": self.default, "help": self.help}


_SIMPLE = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}


def _kinds_and_choices(annotation: Any) -> tuple[list[str], list[str]]:
    """The kinds of value a type annotation admits, and the choices its Enum or Literal parts name."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds, choices = [], []
        for part in typing.get_args(annotation):
            k, c = _kinds_and_choices(part)
            kinds += [x for x in k if x not in kinds]
            choices += c
        return kinds, choices
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        kinds = []
        for value in values:
            kind = _SIMPLE.get(type(value), "object")
            if kind not in kinds:
                kinds.append(kind)
        return kinds, [str(v) for v in values if isinstance(v, str)]
    if annotation in _SIMPLE:
        return [_SIMPLE[annotation]], []
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ["str"], [str(member.value) for member in annotation]
    if origin in (list, tuple) or annotation in (list, tuple):
        # A list of enum members (``debug: list[DebugOption]``) takes those members' values only.
        choices = [c for part in typing.get_args(annotation) if part is not Ellipsis for c in _kinds_and_choices(part)[1]]
        return ["list"], choices
    if origin is dict or annotation is dict:
        return ["dict"], []
    return ["object"], []


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def specs_of(config_class: type, owner: str) -> list[KeySpec]:
    """The keys one config dataclass declares, read from its public fields."""
    hints = typing.get_type_hints(config_class)
    specs = []
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue
        kinds, choices = _kinds_and_choices(hints.get(f.name, f.type))
        metadata_choices = f.metadata.get("choices")
        if metadata_choices:
            choices = [str(c) for c in metadata_choices]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        help_text = " ".join(str(f.metadata.get("help", "")).split())
        specs.append(KeySpec(f.name, owner, tuple(kinds), tuple(dict.fromkeys(choices)) or None, _plain(default), help_text))
    return specs


def build_schema() -> dict[str, dict[str, Any]]:
    """The schema from the classes themselves (imports TRL; for writing the file and for its test)."""
    import importlib

    from trl import ModelConfig, SFTConfig

    from recipekit.config.arguments import RecipeArguments

    schema: dict[str, dict[str, Any]] = {}
    sources = [(RecipeArguments, "RecipeArguments"), (SFTConfig, "SFTConfig"), (ModelConfig, "ModelConfig")]
    for path in BUILTIN_PLUGINS:
        module, _, name = path.rpartition(".")
        config_class = getattr(importlib.import_module(module), name).config_class
        if config_class is not None:
            sources.append((config_class, path))
    for config_class, owner in sources:
        for spec in specs_of(config_class, owner):
            schema.setdefault(spec.name, spec.as_dict())  # RecipeArguments first: its keys win
    return schema


def schema_text(schema: dict[str, dict[str, Any]]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


@lru_cache(maxsize=1)
def load_schema() -> dict[str, KeySpec]:
    """The committed schema (no torch, transformers or TRL import)."""
    raw = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return {
        name: KeySpec(name, entry["owner"], tuple(entry["kinds"]), tuple(entry["choices"]) if entry["choices"] else None,
                      entry["default"], entry["help"])
        for name, entry in raw.items()
    }


def main() -> int:
    """Rewrite recipekit/config/recipe_keys.json from the installed TRL, transformers and plugins."""
    SCHEMA_FILE.write_text(schema_text(build_schema()), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE} ({len(load_schema())} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
