"""Recipe schema and parsing: a YAML file plus ``--key value`` overrides -> typed configs.

A recipe's keys are the names users already know: every field of TRL's ``SFTConfig``
(which holds transformers' ``TrainingArguments``) and of TRL's ``ModelConfig`` (model,
LoRA and bitsandbytes settings), plus the few fields of :class:`RecipeArguments` that
this project adds. Their types, choices and defaults are read from those dataclasses'
fields into ``recipekit/config/recipe_keys.json`` (``recipekit.config.schema``), so a recipe is checked,
and ``--help`` answered (``recipekit.config.help``), before torch or TRL is imported. The
values follow ``trl sft``'s rules (``recipekit.config.values``); this module adds the
project's: a positional recipe file, every problem reported at once, and an unknown key
named with the closest valid one.
"""

from __future__ import annotations

import difflib
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import yaml

from recipekit.config.arguments import RecipeArguments
from recipekit.config.notices import announce
from recipekit.config.recipe import Recipe, to_plain
from recipekit.config.schema import (
    BUILTIN_PLUGINS,
    PROJECT_DEFAULTS,
    KeySpec,
    load_schema,
    specs_of,
)
from recipekit.config.validate import no_gpu_advice
from recipekit.config.values import coerce, split_overrides
from recipekit.errors import RecipeError

# The recipes users copy live in the `recipes` package; found without importing it.
RECIPES_DIR = Path(importlib.util.find_spec("recipes").origin).parent
DEFAULT_RECIPE = RECIPES_DIR / "smoke.yaml"


def plugin_paths(content: dict[str, Any], overrides: list[str]) -> list[str]:
    """The plugin list, from ``--plugins a b`` on the command line or else the recipe."""
    if "--plugins" in overrides:
        values = []
        for item in overrides[overrides.index("--plugins") + 1 :]:
            if item.startswith("--"):
                break
            values.append(item)
        return values
    listed = content.get("plugins") or []
    if isinstance(listed, str):
        listed = [listed]
    if not isinstance(listed, list):
        raise RecipeError(f"`plugins` must be a list of dotted paths, not {listed!r}.")
    return [str(p) for p in listed]


def closest_key_hint(key: str, keys: list[str]) -> str:
    """' Did you mean `x`?' for a misspelt key, or a pointer to --help."""
    matches = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if matches:
        return f" Did you mean `{matches[0]}`?"
    return " Run `python -m recipes.run --help` for the list of keys."


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice is an error, not "the last one wins"."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key `{key}` appears twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                "keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)

# A recipe is a page of keys. Bounds on what a shared recipe may make this process read or build:
# YAML aliases can expand a few lines into billions of values (an "alias bomb").
MAX_RECIPE_BYTES = 2**20
MAX_RECIPE_VALUES = 100_000


def _expanded_values(node: yaml.Node, counted: dict[int, int]) -> int:
    """How many values the YAML node stands for once every alias is expanded (each shared node counted once
    per use, computed once)."""
    if id(node) in counted:
        return counted[id(node)]
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_values(child, counted) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_values(k, counted) + _expanded_values(v, counted) for k, v in node.value)
    else:
        total = 1
    counted[id(node)] = total
    return total


def load_recipe_file(path: Path) -> dict[str, Any]:
    """Read a recipe YAML file into a mapping, with a clear error for each way it can be wrong."""
    from recipekit.runtime.file_checks import control_character, read_text

    if not path.exists():
        raise RecipeError(f"recipe file {path} does not exist. Pass the path of a YAML recipe, e.g. recipes/smoke.yaml.")
    if path.is_file() and path.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"recipe {path} is {path.stat().st_size / 2**20:.0f} MiB; a recipe is a page of `key: value` "
                          f"lines (at most {MAX_RECIPE_BYTES // 2**20} MiB). Pass a YAML recipe, e.g. a copy of "
                          "recipes/smoke.yaml.")
    text = read_text(path, "recipe", "Pass a YAML recipe saved as UTF-8 text, e.g. a copy of recipes/smoke.yaml.")
    if bad := control_character(text):
        raise RecipeError(f"recipe {path} holds the control character {bad}: it is not a text recipe. Remove it.")
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)  # aliases stay shared: nothing is expanded yet
        if node is not None and _expanded_values(node, {}) > MAX_RECIPE_VALUES:
            raise RecipeError(
                f"recipe {path} expands, through its YAML anchors and aliases (&name / *name), into more than "
                f"{MAX_RECIPE_VALUES:,} values: no recipe is that large. Write the values out, or remove the aliases."
            )
        content = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}".rstrip(".") + ".") from None
    except RecursionError:
        raise RecipeError(f"recipe {path} nests its values too deeply to be a recipe.") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise RecipeError(f"recipe {path} must be a mapping of `key: value` lines, not a {type(content).__name__}.")
    return content


def split_recipe_argv(argv: list[str]) -> tuple[Path, list[str]]:
    """Separate the optional positional recipe path from the ``--key value`` overrides."""
    if argv and not argv[0].startswith("-"):
        return Path(argv[0]), argv[1:]
    return DEFAULT_RECIPE, argv


def explain_config_error(message: str) -> str:
    """Add the project's advice to transformers' terser configuration errors."""
    if "bf16/gpu" in message:
        return no_gpu_advice("bf16 mixed precision")
    return message


def recipe_keys(plugins: list[str]) -> tuple[dict[str, KeySpec], dict[str, str]]:
    """The keys a recipe listing ``plugins`` may set, and the built-in plugin keys it may not
    (each with the plugin that owns it, for the hint).

    Built-in plugins' keys come from the schema file; any other plugin is imported to read
    its ``config_class`` (its own import cost), and a key it declares twice is refused.
    """
    schema = load_schema()
    keys = {n: s for n, s in schema.items() if s.owner not in BUILTIN_PLUGINS or s.owner in plugins}
    unlisted = {n: s.owner for n, s in schema.items() if n not in keys}
    others = [p for p in plugins if p not in BUILTIN_PLUGINS]
    if others:
        from plugins.base import load_plugin_classes

        for path, plugin in zip(others, load_plugin_classes(others)):
            if plugin.config_class is None:
                continue
            for spec in specs_of(plugin.config_class, path):
                if spec.name in keys:
                    raise RecipeError(
                        f"plugin `{path}` declares the recipe key `{spec.name}`, which already exists "
                        f"({keys[spec.name].owner}); rename it in {plugin.config_class.__name__}, e.g. with the "
                        "plugin's name as a prefix."
                    )
                keys[spec.name] = spec
    return keys, unlisted


def unknown_key_problem(key: str, where: str, keys: dict[str, KeySpec], unlisted: dict[str, str]) -> str:
    from recipekit.training.sources import TRL_DATA_KEYS, trl_data_key_problem

    if key in TRL_DATA_KEYS:
        return trl_data_key_problem(key)
    if key in unlisted:
        return f"`{key}` {where} belongs to the plugin {unlisted[key]}, which the recipe does not list under `plugins:`."
    return f"unknown key `{key}` {where}.{closest_key_hint(str(key), list(keys))}"


def typed_values(content: dict[str, Any], overrides: list[str], keys: dict[str, KeySpec],
                 unlisted: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The values the recipe and its overrides set, typed, and a sentence for each bad one."""
    given: dict[str, Any] = {}
    problems: list[str] = []
    cli, problems_cli = split_overrides(overrides)
    for source, where, from_cli in ((content, "in the recipe", False), (cli, "on the command line", True)):
        for key, raw in source.items():
            spec = keys.get(key)
            if spec is None:
                problems.append(unknown_key_problem(key, where, keys, unlisted))
                continue
            value, problem = coerce(spec, raw, from_cli)
            if problem:
                problems.append(problem)
            else:
                given[key] = value
    return given, problems + problems_cli


def build_configs(given: dict[str, Any], keys: dict[str, KeySpec], plugin_classes: list) -> tuple[list[Any], list[Any]]:
    """The typed configs, each from the keys it owns (its own defaults for the rest); imports TRL."""
    from trl import ModelConfig, SFTConfig

    def owned(owner: str) -> dict[str, Any]:
        return {k: v for k, v in given.items() if keys[k].owner == owner}

    with warnings.catch_warnings():
        # recipekit.training.model applies `pad_token` to the tokenizer itself, as TRL advises.
        warnings.filterwarnings("ignore", message="`pad_token` is deprecated", category=FutureWarning)
        # TRL 1.16's SFTConfig still sets the old name's default (gradient_checkpointing=True), and
        # transformers warns when it stands in for an unset activation_checkpointing: not the user's doing.
        warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
        model_values = {**{k: v for k, v in PROJECT_DEFAULTS.items() if k not in given}, **owned("ModelConfig")}
        configs = [RecipeArguments(**owned("RecipeArguments")), SFTConfig(**owned("SFTConfig")), ModelConfig(**model_values)]
    plugin_configs = []
    for path, plugin in plugin_classes:
        plugin_configs.append(plugin.config_class(**owned(path)) if plugin.config_class else None)
    return configs, plugin_configs


def parse_recipe(argv: list[str], check_environment: bool = True) -> Recipe:
    """Parse ``[RECIPE.yaml] [--key value ...]`` into a :class:`Recipe`, or raise :class:`RecipeError`.

    Every problem found is reported at once, numbered: unknown keys, values of the wrong type
    or outside their choices, out-of-range values and combinations that cannot work
    (``recipekit.config.validate``), all checked from the key schema before torch or TRL is imported,
    so a bad recipe is answered in a fraction of a second. Then the machine is checked (a GPU
    for bf16 or 4-bit) and the configs are built. ``check_environment=False`` skips the
    checks of this machine and its files (data present, GPU present): for reading a recipe,
    or a finished run's recipe, anywhere.
    """
    from recipekit.config.validate import check_machine, check_values

    path, overrides = split_recipe_argv(argv)
    content = load_recipe_file(path)
    plugins = plugin_paths(content, overrides)
    if check_environment:  # a run, not a finished run's recipe read back: before any plugin code is imported
        announce(path, {}, plugins, BUILTIN_PLUGINS)
    keys, unlisted = recipe_keys(plugins)
    given, problems = typed_values(content, overrides, keys, unlisted)
    values = {**{k: s.default for k, s in keys.items()}, **PROJECT_DEFAULTS, **given}
    if check_environment:  # before the model loads or anything is sent
        announce(path, values, [], BUILTIN_PLUGINS)
    problems += check_values(values, check_environment)
    if not problems and check_environment:
        problems += check_machine(values)  # imports torch: only once everything else is right
    if problems:
        raise RecipeError(format_problems(path, problems))

    from plugins.base import load_plugin_classes

    plugin_classes = list(zip(plugins, load_plugin_classes(plugins)))
    try:
        (recipe_args, training_args, model_args), plugin_configs = build_configs(given, keys, plugin_classes)
    except (ValueError, TypeError) as exc:  # the configs' own checks, in __post_init__
        raise RecipeError(format_problems(path, [explain_config_error(str(exc))])) from None

    configs = {"RecipeArguments": recipe_args, "SFTConfig": training_args, "ModelConfig": model_args,
               **{path: config for (path, _), config in zip(plugin_classes, plugin_configs)}}
    resolved = {key: to_plain(getattr(configs[keys[key].owner], key)) for key in given}
    plugin_objects = [cls(config) for (_, cls), config in zip(plugin_classes, plugin_configs)]
    recipe = Recipe(path=path, recipe=recipe_args, training=training_args, model=model_args, resolved=resolved,
                    plugins=plugin_objects)
    for plugin in plugin_objects:
        plugin.on_recipe_parsed(recipe)
    return recipe


def format_problems(path: Path, problems: list[str]) -> str:
    """One problem: one sentence. Several: a numbered list, so each can be fixed in one pass."""
    if len(problems) == 1:
        return f"recipe {path} (with its command-line overrides): {problems[0]}"
    listed = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
    return f"recipe {path} (with its command-line overrides) has {len(problems)} problems:\n{listed}"
