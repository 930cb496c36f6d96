"""Load what a finished run saved: its resolved recipe, its tokenizer, base model + adapter.

Evaluation, generation and merging all start from a run's ``output_dir``. The resolved
``recipe.yaml`` there names the base model, the data and the precision the adapter was
trained with, so every later step rebuilds exactly the same setup.
"""

from __future__ import annotations

from pathlib import Path

from recipekit.config.parse import parse_recipe
from recipekit.config.recipe import Recipe
from recipekit.errors import RecipeError
from recipekit.rundir.checkpoints import (
    newest_complete_checkpoint,
    saved_adapter_problem,
)
from recipekit.rundir.lock import live_run_in


def adapter_config_problem(path: Path) -> str | None:
    """Why PEFT could not load this adapter_config.json with the weights beside it, found before the
    base model loads: each field PEFT reads is checked for its type, and the rank against the saved
    matrices' shapes (the safetensors header, no tensor loaded)."""
    import json

    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"{path.name} cannot be read as JSON ({exc})"
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        return f"{path.name} does not describe a LoRA adapter (no `peft_type: LORA`)"
    rank, alpha, targets = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        return f"{path.name} has no positive integer rank `r`"
    # Left out, PEFT takes its defaults (alpha 8, the model type's usual modules); given, they must fit.
    if alpha is not None and (not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0):
        return f"{path.name} has `lora_alpha` {alpha!r}, where a positive number belongs"
    if targets is not None and not (isinstance(targets, str) or (isinstance(targets, list) and targets
                                                                and all(isinstance(t, str) for t in targets))):
        return f"{path.name} has `target_modules` {targets!r}, where module names belong"
    if not config.get("rank_pattern"):
        ranks = _saved_lora_ranks(path.parent / "adapter_model.safetensors")
        if ranks and ranks != {rank}:
            return (f"{path.name} says rank {rank}, but the saved adapter matrices have rank "
                    f"{', '.join(map(str, sorted(ranks)))}")
    return None


def _saved_lora_ranks(weights: Path) -> set[int]:
    """The ranks of the saved ``lora_A`` matrices (their first dimension), from safetensors' header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="numpy") as saved:  # shapes only: no torch import
            return {saved.get_slice(name).get_shape()[0] for name in saved.keys() if "lora_A" in name}
    except (SafetensorError, OSError, IndexError):
        return set()  # a damaged file is named by saved_adapter_problem


def load_run_recipe(run_dir: str | Path, *overrides: str) -> Recipe:
    """The recipe a run was trained with, from ``RUN_DIR/recipe.yaml``."""
    run = Path(run_dir)
    if training := live_run_in(run):
        raise RecipeError(
            f"a run is training into {run} now ({training}): the adapter there is the one it will replace when it "
            "ends. Wait for that run to finish, or point at a copy of the run folder."
        )
    if not (run / "adapter_config.json").is_file() or not (run / "recipe.yaml").is_file():
        raise RecipeError(
            f"{run} is not a finished run: it lacks adapter_config.json or recipe.yaml. Pass the output_dir "
            "of a run of `recipes.run` (where the adapter was saved)."
        )
    if problem := saved_adapter_problem(run) or adapter_config_problem(run / "adapter_config.json"):
        newest = newest_complete_checkpoint(run)
        raise RecipeError(
            f"{run} holds no usable adapter: {problem}. Use its newest whole checkpoint"
            + (f" ({newest})" if newest else " (it has none)")
            + " or rerun the training with the same command to finish it."
        )
    # The run's own files and this machine are checked where they are used (loading the model).
    # A run trained on a GPU (bf16) must still be readable on a CPU machine, e.g. to merge it:
    # transformers refuses bf16 there unless use_cpu is set.
    import torch

    on_cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    return parse_recipe([str(run / "recipe.yaml"), *on_cpu, *overrides], check_environment=False)


def load_run_tokenizer(run_dir: str | Path):
    """The tokenizer saved with the adapter (pad token already set as in training)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(run_dir)
    except (OSError, ValueError, AttributeError, TypeError, KeyError) as exc:
        raise RecipeError(
            f"the tokenizer saved in {run_dir} cannot be loaded ({type(exc).__name__}: {exc}); its tokenizer files "
            "(tokenizer.json, tokenizer_config.json) are damaged. Copy them from the base model or the run's "
            "newest checkpoint."
        ) from None


def load_base_model(recipe: Recipe, quantized: bool = True, keep_dtype: bool = False):
    """The base model as the recipe loads it; ``quantized=False`` loads a 4-bit recipe's base in its dtype.

    On a CPU a half-precision recipe runs in float32 (faster there, and some ops lack bf16
    kernels) unless ``keep_dtype``: a merge keeps the recipe's dtype, so its output is the size
    and precision of the base model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from recipekit.fast_paths.varlen_attention import register_if_named
    from recipekit.training.model import (
        build_peft_and_quantization,
        check_accelerator,
        loading_error,
    )

    model_args = recipe.model
    register_if_named(model_args.attn_implementation)
    quantization = build_peft_and_quantization(model_args)[1] if quantized else None
    if quantization is not None:
        check_accelerator(model_args, recipe.training)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    if not keep_dtype and not torch.cuda.is_available() and dtype in (torch.bfloat16, torch.float16):
        dtype = torch.float32
    try:
        return AutoModelForCausalLM.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            dtype=dtype,
            attn_implementation=model_args.attn_implementation,
            quantization_config=quantization,
            device_map="auto" if torch.cuda.is_available() else None,
            trust_remote_code=recipe.training.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise loading_error(model_args.model_name_or_path, exc) from None


def load_adapter_model(run_dir: str | Path, recipe: Recipe, quantized: bool = True, keep_dtype: bool = False):
    """Base model with the run's LoRA adapter attached (``disable_adapter()`` gives the base back)."""
    from peft import PeftModel

    base = load_base_model(recipe, quantized, keep_dtype)
    try:
        model = PeftModel.from_pretrained(base, str(run_dir))
    except ValueError as exc:  # PEFT's words for target modules the base model does not have
        raise RecipeError(f"the adapter in {run_dir} does not fit its base model {recipe.model.model_name_or_path}: "
                          f"{str(exc).splitlines()[0]} Check adapter_config.json's `target_modules`, or "
                          "retrain the run.") from None
    model.eval()
    return model


def run_prompt_format(run_dir: Path, recipe: Recipe) -> str:
    """The prompt format the run trained in: as its manifest records it, or (a run from before the
    manifest said) as the first record of its training data shows."""
    import json

    from preprocess.prompt_format import PROMPT_FORMATS, detect_prompt_format
    from recipekit.rundir.manifest import MANIFEST_NAME
    from recipekit.training.data import split_path
    from recipekit.training.sources import evaluation_folder

    try:
        recorded = json.loads((Path(run_dir) / MANIFEST_NAME).read_text(encoding="utf-8")).get("prompt_format")
    except (OSError, ValueError, AttributeError, RecursionError):
        recorded = None
    if recorded in PROMPT_FORMATS:
        return recorded
    folder = evaluation_folder(recipe.recipe)
    path = split_path(folder, recipe.recipe.train_split)
    if not path.is_file():
        return "completion"
    try:
        with path.open(encoding="utf-8") as handle:
            return detect_prompt_format(json.loads(handle.readline()))
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, RecursionError) as exc:
        raise RecipeError(
            f"the run's training data {path} (line 1), which tells the prompt format to answer in, cannot be read: "
            f"{exc}. Restore it with `python -m preprocess.fiqa --out {folder}` (and the --format "
            "the run was trained with)."
        ) from None
