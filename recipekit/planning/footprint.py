"""What a run occupies besides time: the GPU memory this machine offers, and the checkpoints' disk space.

Nothing loads weights. The visible card is asked for its free memory (``torch.cuda.mem_get_info``);
the adapter's size comes from the model's config (``AutoConfig``: a few KB) built on the meta
device and wrapped by PEFT with the recipe's LoRA settings, the way ``check_architecture`` counts
trainable parameters before a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recipekit.config.recipe import Recipe
from recipekit.config.values import as_text, evaluation_on, saving_on

GIB = 2**30


@dataclass(frozen=True)
class VisibleGpu:
    name: str
    free_bytes: int
    total_bytes: int


def visible_gpu() -> VisibleGpu | None:
    """The first CUDA card and its free memory, or None when no GPU is visible (torch is not asked
    when none can be, e.g. no NVIDIA driver)."""
    from recipekit.config.validate import surely_no_gpu

    if surely_no_gpu():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return VisibleGpu(torch.cuda.get_device_name(0), free, total)


def trainable_parameters(recipe: Recipe) -> tuple[int | None, str]:
    """The adapter's trainable parameters, or None and why they are not known."""
    model_args, args = recipe.model, recipe.training
    if not model_args.use_peft:
        return None, "use_peft is off: this recipe trains the whole model, which this plan does not size"
    name = model_args.model_name_or_path
    try:
        import torch
        from peft import get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM
        from trl import get_peft_config

        config = AutoConfig.from_pretrained(name, revision=model_args.model_revision,
                                            trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"the config of {name} cannot be read here ({type(exc).__name__}: {first[:160]})"
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=args.trust_remote_code)
        return get_peft_model(model, get_peft_config(model_args)).get_nb_trainable_parameters()[0], ""
    except Exception as exc:  # noqa: BLE001 - a plan reports what it cannot size; the run reports its own errors
        return None, f"PEFT could not wrap {name} on the meta device ({type(exc).__name__}: {exc})"


def adapter_dtype(recipe: Recipe) -> tuple[int, str]:
    """Bytes per adapter weight as a checkpoint stores it, and why.

    PEFT keeps adapters in float32 (``autocast_adapter_dtype``); TRL casts them to bfloat16 on a
    4-bit or 8-bit base; ``autocast_adapter_dtype: false`` keeps them in the model's dtype.
    """
    model_args = recipe.model
    if model_args.load_in_4bit or model_args.load_in_8bit:
        return 2, "bfloat16 (TRL casts the adapters of a quantized base to bf16)"
    if not recipe.recipe.autocast_adapter_dtype and as_text(model_args.dtype) in ("bfloat16", "float16"):
        return 2, f"{as_text(model_args.dtype)} (autocast_adapter_dtype: false keeps the model's dtype)"
    return 4, "float32 (PEFT's default for adapter weights)"


def optimizer_copies(optim: str) -> tuple[int | None, str]:
    """Tensors of the adapter's size the optimizer state holds per weight, or None when not known here."""
    if optim.startswith("adamw_torch") or optim in ("adamw_hf", "adamw_apex_fused"):
        return 2, "AdamW's two moments, in the weights' dtype"
    return None, f"the state of optim `{optim}` is not sized by this plan"


def saves_and_kept(recipe: Recipe, max_steps: int, steps_per_epoch: int) -> tuple[int, int, str]:
    """(checkpoints written, most on disk at once, why), as transformers' Trainer saves and rotates them.

    The Trainer deletes the oldest checkpoint after it has written the newest, so for a moment the
    disk holds ``save_total_limit`` + 1, plus the best one when ``load_best_model_at_end`` keeps it.
    """
    args = recipe.training
    strategy = as_text(args.save_strategy)
    if not saving_on(args.save_strategy):
        return 0, 0, "save_strategy: no"
    if strategy == "steps":
        every = math.ceil(args.save_steps * max_steps) if args.save_steps < 1 else int(args.save_steps)
        saves = max_steps // every + (1 if max_steps % every else 0)  # and one at the last step
    elif strategy == "epoch":
        saves = math.ceil(max_steps / steps_per_epoch)
    else:  # "best": at most one per evaluation
        saves = math.ceil(max_steps / steps_per_epoch) if as_text(args.eval_strategy) == "epoch" else max_steps
    limit = args.save_total_limit
    best = 1 if (args.load_best_model_at_end and evaluation_on(args.eval_strategy)) else 0
    if limit is None:
        return saves, saves, "no save_total_limit: every checkpoint is kept"
    peak = min(saves, limit + best + 1)
    why = (f"save_total_limit {limit}" + (" + the best one (load_best_model_at_end)" if best else "")
           + " + the newest, written before the oldest is deleted")
    return saves, peak, why
