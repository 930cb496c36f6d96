"""The model card (``README.md``) written into each run's output dir.

TRL's card names the base model only when it is a hub id ("fine-tuned version of [None]"
for a local folder) and knows nothing of the recipe or the data. This one says what a
reader of a shared adapter needs: the base model, the data and its prompt format, the
recipe's settings, the results, the loss chart, and how to use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recipekit.config.recipe import Recipe

# The settings a reader compares between adapters; recipe.yaml beside the card holds them all.
CARD_SETTINGS = (
    "load_in_4bit", "lora_r", "lora_alpha", "lora_target_modules", "learning_rate", "num_train_epochs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "packing",
)


def _data_description(recipe: Recipe) -> tuple[str, str | None]:
    """A sentence on the data, and the hub dataset id when it came from the hub."""
    manifest_path = Path(recipe.recipe.data_dir) / "manifest.json"
    if not manifest_path.is_file():
        return f"`{recipe.recipe.data_dir}`", None
    try:  # the card is written after a finished run: a damaged data manifest must not fail it
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        splits = manifest.get("splits", {})
        rows = ", ".join(f"{name} {info.get('rows')}" for name, info in splits.items())
        source = str(manifest.get("source", ""))
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return f"`{recipe.recipe.data_dir}` (its manifest.json could not be read)", None
    hub_id = source.removeprefix("hf://datasets/").split("@")[0] if source.startswith("hf://datasets/") else None
    return f"FiQA from `{source}` ({rows} rows), `{manifest.get('format')}` prompt format", hub_id


def render_model_card(recipe: Recipe, metrics: dict[str, Any], has_loss_chart: bool) -> str:
    model = recipe.model.model_name_or_path
    method = "QLoRA (4-bit base)" if recipe.model.load_in_4bit else "LoRA"
    data, hub_dataset = _data_description(recipe)
    linked = model if Path(model).exists() else f"[{model}](https://huggingface.co/{model})"
    front = ["---", f"base_model: {model}", "library_name: peft", "pipeline_tag: text-generation",
             "tags: [lora, sft, trl, finance, fiqa]"]
    if hub_dataset:
        front.append(f"datasets: [{hub_dataset}]")
    front.append("---")
    settings = {k: recipe.resolved.get(k, getattr(recipe.training, k, getattr(recipe.model, k, None)))
                for k in CARD_SETTINGS}
    lines = [
        *front, "",
        f"# {recipe.name}: {method} adapter of {model} for financial Q&A", "",
        f"A {method} adapter of {linked}, trained with `recipes.run` from the recipe `{recipe.path}` "
        f"(resolved in `recipe.yaml` beside this card) on {data}. Loss on the answer tokens only.", "",
        "## Recipe", "", "| setting | value |", "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in settings.items()], "",
        "## Results", "", "| metric | value |", "|---|---|",
        *[f"| {k} | {round(v, 4) if isinstance(v, float) else v} |" for k, v in sorted(metrics.items())], "",
    ]
    if has_loss_chart:
        lines += ["![training and validation loss](loss.png)", ""]
    lines += [
        "## Use", "",
        "```bash",
        f'python -m recipes.generate {recipe.training.output_dir} "Is a Roth IRA better than a 401k?"',
        f"python -m recipes.evaluate {recipe.training.output_dir} --split test   # base vs tuned, scored",
        "```", "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{recipe.training.output_dir}")',
        "```", "",
    ]
    return "\n".join(lines)
