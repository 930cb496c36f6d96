"""Recipe schema and parsing: a YAML file plus ``--key value`` overrides -> typed configs.

A recipe's keys are the names users already know: every field of TRL's ``SFTConfig``
(which holds transformers' ``TrainingArguments``) and of TRL's ``ModelConfig`` (model,
LoRA and bitsandbytes settings), plus the few fields of :class:`RecipeArguments` that
this project adds. Parsing goes through TRL's own ``TrlParser``, so types, choices and
``--help`` behave as in ``trl sft``; this module adds the project's rules: a positional
recipe file, and an error that names any unknown key with the closest valid one.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from recipes.errors import RecipeError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_RECIPE = PACKAGE_DIR / "smoke.yaml"


@dataclass
class RecipeArguments:
    """The keys this project adds to TRL's; everything else is an ``SFTConfig``/``ModelConfig`` field."""

    data_dir: str = field(
        default="data/fiqa",
        metadata={"help": "Folder of JSONL splits written by `python -m preprocess.fiqa --out DIR`."},
    )
    train_split: str = field(default="train", metadata={"help": "Split file (without .jsonl) to train on."})
    eval_split: str = field(
        default="validation", metadata={"help": "Split file (without .jsonl) evaluated during training."}
    )
    build_smoke_assets: bool = field(
        default=False,
        metadata={
            "help": "Build the offline tiny Llama at model_name_or_path and the preprocessed fixture at "
            "data_dir when they are missing (smoke recipe only)."
        },
    )
    recipe_name: str | None = field(
        default=None, metadata={"help": "Name used in logs and plot titles; defaults to the recipe file's stem."}
    )
    plugins: list[str] = field(
        default_factory=list,
        metadata={"help": "Plugins by dotted path, e.g. plugins.loss_curves.LossCurves (see plugins/base.py)."},
    )


class _RaisingParser:
    """Mixin that turns argparse's print-usage-and-exit into a :class:`RecipeError`."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise RecipeError(message)


def _argparse_message(message: str) -> str:
    """'argument --lr/--l-r: invalid float value' -> '`lr`: invalid float value'."""
    message = re.sub(r"argument --([\w.]+)(?:/--[\w.-]+)?: ", r"`\1`: ", message)
    return message.rstrip(".") + "."


def _make_parser(plugin_configs: tuple[type, ...] = ()):
    from trl import ModelConfig, SFTConfig, TrlParser

    class RecipeParser(_RaisingParser, TrlParser):
        pass

    try:
        return RecipeParser(
            (RecipeArguments, SFTConfig, ModelConfig, *plugin_configs),
            prog="accelerate launch -m recipes.run",
            usage="accelerate launch -m recipes.run [RECIPE.yaml] [--key value ...]",
            allow_abbrev=False,
        )
    except argparse.ArgumentError as exc:  # a plugin key that clashes with another key
        owners = ", ".join(c.__name__ for c in plugin_configs)
        raise RecipeError(
            f"a plugin declares a recipe key that already exists ({exc}); rename it in {owners}, "
            "e.g. with the plugin's name as a prefix."
        ) from None


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


def valid_keys(parser: argparse.ArgumentParser) -> list[str]:
    """Every key a recipe may set."""
    return sorted(a.dest for a in parser._actions if a.dest != "help")


def closest_key_hint(key: str, keys: list[str]) -> str:
    """' Did you mean `x`?' for a misspelt key, or a pointer to --help."""
    matches = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if matches:
        return f" Did you mean `{matches[0]}`?"
    return " Run `python -m recipes.run --help` for the list of keys."


def load_recipe_file(path: Path) -> dict[str, Any]:
    """Read a recipe YAML file into a mapping, with a clear error for each way it can be wrong."""
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist. Pass the path of a YAML recipe, e.g. recipes/smoke.yaml.")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}".rstrip(".") + ".") from None
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


def _cli_keys(overrides: list[str]) -> list[str]:
    return [item[2:].split("=", 1)[0] for item in overrides if item.startswith("--")]


def to_plain(value: Any) -> Any:
    """Make a config value YAML-safe (enums to their value, paths to text)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def explain_config_error(message: str) -> str:
    """Add the project's advice to transformers' terser configuration errors."""
    if "bf16/gpu" in message:
        return (
            "this recipe asks for bf16 mixed precision, which needs a CUDA GPU, and none is visible. Run it on a "
            "GPU machine; for a CPU run use `--bf16 false --dtype float32 --load_in_4bit false`, or run the smoke "
            "recipe (recipes/smoke.yaml)."
        )
    return message


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


def parse_recipe(argv: list[str]) -> Recipe:
    """Parse ``[RECIPE.yaml] [--key value ...]`` into a :class:`Recipe`, or raise :class:`RecipeError`."""
    from plugins.base import load_plugin_classes

    path, overrides = split_recipe_argv(argv)
    content = load_recipe_file(path)
    plugin_classes = load_plugin_classes(plugin_paths(content, overrides))
    plugin_configs = tuple(dict.fromkeys(c.config_class for c in plugin_classes if c.config_class))
    parser = _make_parser(plugin_configs)
    keys = valid_keys(parser)
    unknown = [k for k in content if k not in keys]
    if unknown:
        raise RecipeError(
            " ".join(f"recipe {path}: unknown key `{k}`.{closest_key_hint(str(k), keys)}" for k in unknown)
        )
    bad_choices = [
        f"`{a.dest}`: invalid choice: {content[a.dest]!r} (choose from {', '.join(map(repr, a.choices))})."
        for a in parser._actions
        if a.choices and a.dest in content and str(to_plain(content[a.dest])) not in map(str, a.choices)
    ]
    if bad_choices:  # argparse checks choices of command-line values only, not of defaults
        raise RecipeError(f"recipe {path}: " + " ".join(bad_choices))
    parser.set_defaults_with_config(**content)
    try:
        with warnings.catch_warnings():
            # recipes.model_setup applies `pad_token` to the tokenizer itself, as TRL advises.
            warnings.filterwarnings("ignore", message="`pad_token` is deprecated", category=FutureWarning)
            recipe_args, training_args, model_args, *plugin_values, leftover = parser.parse_args_into_dataclasses(
                args=overrides, return_remaining_strings=True
            )
    except RecipeError as exc:  # from argparse: a value of the wrong type or not among the choices
        raise RecipeError(f"recipe {path} (with its command-line overrides): {_argparse_message(str(exc))}") from None
    except (ValueError, TypeError) as exc:  # from the configs' own checks in __post_init__
        raise RecipeError(f"recipe {path} (with its command-line overrides): {explain_config_error(str(exc))}") from None
    if leftover:
        flags = [s for s in leftover if s.startswith("--")] or leftover
        raise RecipeError(
            " ".join(
                f"command line: unknown key `{f.lstrip('-')}`.{closest_key_hint(f.lstrip('-').split('=')[0], keys)}"
                for f in flags
            )
        )
    resolved: dict[str, Any] = {}
    for key in list(content) + [k for k in _cli_keys(overrides) if k not in content]:
        for config in (recipe_args, training_args, model_args, *plugin_values):
            if key in {f.name for f in fields(config)}:
                resolved[key] = to_plain(getattr(config, key))
                break
    config_of = dict(zip(plugin_configs, plugin_values))
    plugins = [cls(config_of.get(cls.config_class)) for cls in plugin_classes]
    recipe = Recipe(
        path=path, recipe=recipe_args, training=training_args, model=model_args, resolved=resolved, plugins=plugins
    )
    for plugin in plugins:
        plugin.on_recipe_parsed(recipe)
    return recipe
