"""``python -m recipes.run [RECIPE.yaml] --help``: the keys people change first, from the schema.

Built from ``recipekit/config/recipe_keys.json`` (no torch, transformers or TRL import), so it
answers at once. It leads with the keys a recipe variant usually changes, grouped as
model, data, LoRA, optimisation, evaluation and output; each shows its library default
(TRL's, or the project's for its own keys) and, when a recipe is given, the recipe's value.
``--help all`` lists every key.
"""

from __future__ import annotations

import textwrap
from typing import Any

from recipekit.config.schema import (
    BUILTIN_PLUGINS,
    PROJECT_DEFAULTS,
    KeySpec,
    load_schema,
)

GROUPS: dict[str, list[str]] = {
    "model": ["model_name_or_path", "dtype", "attn_implementation", "load_in_4bit", "bnb_4bit_quant_type",
              "use_bnb_nested_quant", "bnb_4bit_quant_storage", "trust_remote_code"],
    "data": ["data_dir", "datasets", "prompt_format", "train_split", "eval_split", "max_length", "packing", "packing_strategy",
             "completion_only_loss", "eos_token", "pad_token"],
    "LoRA": ["use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_rslora", "use_dora"],
    "optimisation": ["learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay",
                     "max_grad_norm", "bf16", "activation_checkpointing", "use_liger_kernel", "seed"],
    "evaluation": ["eval_strategy", "eval_steps", "per_device_eval_batch_size", "load_best_model_at_end",
                   "metric_for_best_model", "greater_is_better"],
    "output": ["output_dir", "overwrite_output_dir", "resume_from_checkpoint", "resume_despite_changes",
               "save_strategy", "save_steps", "save_total_limit", "logging_steps", "report_to", "recipe_name",
               "plugins"],
}
USAGE = """\
usage: accelerate launch [--config_file CONFIG] -m recipes.run [RECIPE.yaml] [--key value ...]
       python -m recipes.run [RECIPE.yaml] [--key value ...]      (one process; no recipe: recipes/smoke.yaml)
       python -m recipes.run RECIPE.yaml [--key value ...] --plan [--gpu_hour_price P]
                                           (steps, time, memory, disk and cost; loads no weights, writes nothing)

Train a LoRA or QLoRA adapter with TRL's SFTTrainer from a YAML recipe. Any key can be set in
the recipe or overridden as `--key value` (a list key takes several values, a bool key
true/false). Shown for each key: the default when neither sets it (`TRL` for SFTConfig /
ModelConfig, whose SFTConfig holds transformers' TrainingArguments; `project` for this
project's keys and defaults) and, with a recipe, the `recipe` value."""


def _shown(value: Any) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def key_line(spec: KeySpec, recipe_values: dict[str, Any] | None) -> str:
    source = "project" if spec.owner == "RecipeArguments" or spec.name in PROJECT_DEFAULTS else (
        "plugin" if spec.owner in BUILTIN_PLUGINS else "TRL")
    default = PROJECT_DEFAULTS.get(spec.name, spec.default)
    values = f"{source}: {_shown(default)}"
    if recipe_values is not None and spec.name in recipe_values:
        values = f"recipe: {_shown(recipe_values[spec.name])}; {values}"
    kind = "/".join(k for k in spec.kinds if k != "null")
    if spec.choices and len(spec.choices) <= 6:
        kind = "{" + ",".join(spec.choices) + "}"
    first_sentence = spec.help.split(". ")[0].rstrip(".")
    head = f"  --{spec.name} {kind}  [{values}]"
    body = textwrap.fill(first_sentence, width=100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return head + ("\n" + body if first_sentence else "")


def help_text(recipe_values: dict[str, Any] | None = None, everything: bool = False) -> str:
    """The help page: the grouped keys, then where the rest are (or, with ``everything``, all of them)."""
    schema = load_schema()
    shown = [name for names in GROUPS.values() for name in names]
    parts = [USAGE]
    for group, names in GROUPS.items():
        parts.append(f"{group}:\n" + "\n".join(key_line(schema[n], recipe_values) for n in names if n in schema))
    plugin_keys = [s for s in schema.values() if s.owner in BUILTIN_PLUGINS]
    parts.append("plugin keys (when the plugin is listed under `plugins:`):\n"
                 + "\n".join(key_line(s, recipe_values) + f"  ({s.owner})" for s in plugin_keys))
    rest = sorted(n for n, s in schema.items() if n not in shown and s.owner not in BUILTIN_PLUGINS)
    if everything:
        parts.append("every other key:\n" + "\n".join(key_line(schema[n], recipe_values) for n in rest))
    else:
        parts.append(
            f"{len(rest)} more keys of TRL's SFTConfig (with transformers' TrainingArguments) and ModelConfig are "
            "accepted too: `--help all` lists them, and TRL's and transformers' documentation describes them "
            "(https://huggingface.co/docs/trl/sft_trainer, https://huggingface.co/docs/transformers/main_classes/trainer)."
        )
    return "\n\n".join(parts) + "\n"


def wants_help(argv: list[str]) -> tuple[bool, bool]:
    """(asked for help, asked for every key)."""
    for i, token in enumerate(argv):
        if token in ("-h", "--help"):
            return True, i + 1 < len(argv) and argv[i + 1] == "all"
    return False, False
