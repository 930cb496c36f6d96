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
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a finished run in output_dir (its checkpoints are deleted first)."},
    )
    resume_despite_changes: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint even when the recipe's training settings or the data differ "
                  "from the run that wrote it (the run refuses and lists the differences otherwise)."},
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
    choice = re.match(r"argument --([\w.]+)(?:/--[\w.-]+)?: invalid choice: '(.*)' \(choose from (.*)\)", message)
    if choice:
        choices = [c.strip().strip("'") for c in choice.group(3).split(",")]
        return invalid_choice_message(choice.group(1), choice.group(2), choices)
    message = re.sub(r"argument --([\w.]+)(?:/--[\w.-]+)?: ", r"`\1`: ", message)
    return message.rstrip(".") + "."


def _make_parser(plugin_configs: tuple[type, ...] = ()):
    from trl import ModelConfig, SFTConfig, TrlParser

    class RecipeParser(_RaisingParser, TrlParser):
        pass

    try:
        parser = RecipeParser(
            (RecipeArguments, SFTConfig, ModelConfig, *plugin_configs),
            prog="accelerate launch -m recipes.run",
            usage="accelerate launch -m recipes.run [RECIPE.yaml] [--key value ...]",
            allow_abbrev=False,
        )
        parser.set_defaults(use_peft=True)  # every recipe here trains an adapter unless it says otherwise
        return parser
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


def _drop_cli_key(overrides: list[str], key: str) -> list[str]:
    """Remove ``--key [values...]`` from the override list."""
    kept, skipping = [], False
    for item in overrides:
        if item.startswith("--"):
            skipping = item[2:].split("=", 1)[0].replace("-", "_") == key
        if not skipping:
            kept.append(item)
    return kept


def _parse_collecting_type_errors(parser, content: dict[str, Any], overrides: list[str]):
    """Parse into a namespace; each value of the wrong type or outside its choices is reported
    and left out, and parsing goes on, so the user sees every such problem at once."""
    problems: list[str] = []
    original_defaults = {a.dest: a.default for a in parser._actions}
    defaults = dict(content)
    for _ in range(len(content) + len(overrides) + 1):
        parser.set_defaults_with_config(**defaults)
        try:
            namespace, leftover = parser.parse_known_args(overrides)
            return namespace, leftover, problems
        except RecipeError as exc:
            message = str(exc)
            problems.append(_argparse_message(message))
            match = re.search(r"argument --([\w.]+)", message)
            key = match.group(1) if match else None
            if key is not None and key in _cli_keys(overrides):
                overrides = _drop_cli_key(overrides, key)
            elif key is not None and key in defaults:
                del defaults[key]
                for action in parser._actions:
                    if action.dest == key:
                        action.default = original_defaults[key]
            else:
                return None, [], problems
    return None, [], problems


def _build_configs(parser, namespace) -> list[Any]:
    """The dataclasses from a parsed namespace (as HfArgumentParser does), running their own checks."""
    outputs = []
    values = vars(namespace)
    with warnings.catch_warnings():
        # recipes.model_setup applies `pad_token` to the tokenizer itself, as TRL advises.
        warnings.filterwarnings("ignore", message="`pad_token` is deprecated", category=FutureWarning)
        for dtype in parser.dataclass_types:
            names = {f.name for f in fields(dtype) if f.init}
            outputs.append(dtype(**{k: v for k, v in values.items() if k in names}))
    return outputs


def invalid_choice_message(key: str, value: Any, choices: list[str]) -> str:
    """Name the allowed values, or for long lists the closest few."""
    if len(choices) <= 8:
        allowed = f"choose from {', '.join(choices)}"
    else:
        close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.4)
        allowed = (f"closest: {', '.join(close)}; " if close else "") + "`--help` lists all"
    return f"`{key}`: invalid choice {value!r} ({allowed})."


def parse_recipe(argv: list[str], check_environment: bool = True) -> Recipe:
    """Parse ``[RECIPE.yaml] [--key value ...]`` into a :class:`Recipe`, or raise :class:`RecipeError`.

    Every problem found is reported at once, numbered: unknown keys, values of the wrong type
    or outside their choices, out-of-range values and combinations that cannot work
    (``recipes.validate``). Nothing is loaded before the recipe is known to be sound.
    ``check_environment=False`` skips the checks of this machine and its files (data
    present, GPU present): for reading a recipe, or a finished run's recipe, anywhere.
    """
    from plugins.base import load_plugin_classes
    from recipes.validate import check_values

    path, overrides = split_recipe_argv(argv)
    content = load_recipe_file(path)
    plugin_classes = load_plugin_classes(plugin_paths(content, overrides))
    plugin_configs = tuple(dict.fromkeys(c.config_class for c in plugin_classes if c.config_class))
    parser = _make_parser(plugin_configs)
    keys = valid_keys(parser)

    problems = [f"unknown key `{k}` in the recipe.{closest_key_hint(str(k), keys)}" for k in content if k not in keys]
    content = {k: v for k, v in content.items() if k in keys}
    problems += [
        invalid_choice_message(a.dest, content[a.dest], [str(c) for c in a.choices])
        for a in parser._actions  # argparse checks the choices of command-line values only, not of defaults
        if a.choices and a.dest in content and str(to_plain(content[a.dest])) not in map(str, a.choices)
    ]
    content = {k: v for k, v in content.items() if not any(f"`{k}`: invalid choice" in p for p in problems)}
    namespace, leftover, type_problems = _parse_collecting_type_errors(parser, content, overrides)
    problems += type_problems
    problems += [
        f"unknown key `{f.lstrip('-')}` on the command line.{closest_key_hint(f.lstrip('-').split('=')[0], keys)}"
        for f in ([s for s in leftover if s.startswith("--")] or leftover)
    ]
    if namespace is not None:
        problems += check_values(vars(namespace), check_environment)
    if problems:
        raise RecipeError(format_problems(path, problems))
    try:
        recipe_args, training_args, model_args, *plugin_values = _build_configs(parser, namespace)
    except (ValueError, TypeError) as exc:  # the configs' own checks, in __post_init__
        raise RecipeError(format_problems(path, [explain_config_error(str(exc))])) from None

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


def format_problems(path: Path, problems: list[str]) -> str:
    """One problem: one sentence. Several: a numbered list, so each can be fixed in one pass."""
    if len(problems) == 1:
        return f"recipe {path} (with its command-line overrides): {problems[0]}"
    listed = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
    return f"recipe {path} (with its command-line overrides) has {len(problems)} problems:\n{listed}"
