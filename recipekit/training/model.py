"""Tokenizer, model-loading keyword arguments, and the LoRA / 4-bit configs of a recipe.

The configs themselves come from TRL's ``get_peft_config`` and ``get_quantization_config``
(the same functions ``trl sft`` uses); this module adds the checks TRL leaves out: a pad
token distinct from EOS, and 4-bit or bf16 refused on a machine without a GPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from recipekit.config.values import saving_on
from recipekit.errors import RecipeError


def loading_error(name: str, exc: Exception) -> RecipeError:
    """A model or tokenizer that cannot be loaded: say which, why, and what to check."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RecipeError(
        f"could not load {name!r} ({type(exc).__name__}: {first_line}). Check `model_name_or_path` (a hub id "
        "or a local folder with config.json and weights), the network (HF_HUB_OFFLINE must be unset to "
        "download), and `hf auth login` for gated models."
    )


def check_hub_reachable(name: str, revision: str | None = None, timeout: float = 5.0) -> None:
    """Say within seconds that a hub model cannot be fetched, instead of after a minute of retries.

    Only for a hub id that is neither a local folder nor already in the local cache, and not in
    offline mode; the probe is one HTTP request to the hub endpoint (``HF_ENDPOINT``).
    """
    import urllib.error
    import urllib.request

    from huggingface_hub import constants, try_to_load_from_cache

    if Path(name).exists() or constants.HF_HUB_OFFLINE:
        return
    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return  # cached: transformers can load it without the network
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return  # the hub answered (any status): it is reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RecipeError(
            f"the Hugging Face hub ({constants.ENDPOINT}) cannot be reached ({reason}), and {name!r} is not in the "
            "local cache. Check the network or proxy, or work offline: download the model where there is network "
            "(`hf download MODEL --local-dir DIR`), set `model_name_or_path` to that folder and HF_HUB_OFFLINE=1."
        ) from None


def load_tokenizer(model_args, training_args):
    """The model's tokenizer with a pad token that is not EOS.

    With pad == EOS, TRL's collator masks padding by token id, so the closing EOS of every
    answer is masked too and the model never learns to stop.
    """
    from transformers import AutoTokenizer

    check_hub_reachable(model_args.model_name_or_path, model_args.model_revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            trust_remote_code=training_args.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise loading_error(model_args.model_name_or_path, exc) from None
    wanted = training_args.pad_token
    if wanted is not None:
        if wanted not in tokenizer.get_vocab():
            raise RecipeError(
                f"pad_token {wanted!r} is not in the vocabulary of {model_args.model_name_or_path}. Set "
                "`pad_token` to one of its unused special tokens (for Llama 3 models: <|finetune_right_pad_id|>)."
            )
        tokenizer.pad_token = wanted
    eos = training_args.eos_token or tokenizer.eos_token
    if tokenizer.pad_token is None or tokenizer.pad_token == eos:
        raise RecipeError(
            f"the tokenizer of {model_args.model_name_or_path} has no pad token distinct from EOS "
            f"({eos!r}); padding with EOS would mask the EOS the model must learn. Set `pad_token` in the "
            "recipe to an unused special token (for Llama 3 models: <|finetune_right_pad_id|>)."
        )
    return tokenizer


def check_architecture(model_args, training_args) -> None:
    """Before the weights load (minutes for 8B): the LoRA target modules exist in the model, built
    from its config on the meta device (no memory, no weights), and the disk holds the
    checkpoints; a ``max_length`` beyond the model's context length is pointed out."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    name = model_args.model_name_or_path
    try:
        config = AutoConfig.from_pretrained(name, revision=model_args.model_revision,
                                            trust_remote_code=training_args.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise loading_error(name, exc) from None
    context = getattr(config, "max_position_embeddings", None)
    if training_args.max_length and context and training_args.max_length > context:
        print(f"warning: max_length {training_args.max_length} is beyond {name}'s context length ({context}).")
    if not model_args.use_peft:
        return
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=training_args.trust_remote_code)
    except Exception:  # noqa: BLE001 - a pre-check only: an architecture that cannot be built on the
        return  # meta device is left to the real loader, which reports its own errors
    targets = model_args.lora_target_modules
    if isinstance(targets, (list, tuple)) and list(targets) != ["all-linear"]:  # a str (regex) is PEFT's to resolve
        module_names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()} | {n for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in module_names]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise RecipeError(
                f"`lora_target_modules` {missing} name no module of {name}. Its linear layers are: "
                f"{', '.join(linear)} (or use `all-linear`)."
            )
    from peft import get_peft_model

    trainable = get_peft_model(model, build_peft_and_quantization(model_args)[0]).get_nb_trainable_parameters()[0]
    check_disk_space(training_args, trainable)


# A checkpoint holds the adapter (fp32, 4 bytes a parameter) and AdamW's two fp32 moments (8 more).
CHECKPOINT_BYTES_PER_TRAINABLE = 12


def check_disk_space(training_args, trainable: int) -> None:
    """Refuse a run whose checkpoints cannot fit on the output disk, before anything loads."""
    saving = saving_on(training_args.save_strategy)
    kept = ((training_args.save_total_limit or 1) + 1) if saving else 0  # the best one is kept on top
    needed = trainable * (CHECKPOINT_BYTES_PER_TRAINABLE * kept + 4) + 64 * 2**20  # + final adapter, logs, charts
    folder = Path(training_args.output_dir).resolve()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RecipeError(
            f"the disk of `output_dir` {training_args.output_dir} has {free / 2**30:.2f} GiB free; this run needs about "
            f"{needed / 2**30:.2f} GiB ({kept} checkpoints of {trainable:,} trainable parameters with their optimizer "
            "state, and the final adapter). Free some space, choose another `output_dir`, or lower `save_total_limit`."
        )


def model_init_kwargs(model_args, training_args) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments, as ``trl sft`` builds them."""
    kwargs: dict[str, Any] = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if training_args.model_init_kwargs is not None:
        kwargs.update(training_args.model_init_kwargs)
    from recipekit.config.validate import launched_with_fsdp

    if "device_map" not in kwargs and launched_with_fsdp() and not training_args.use_cpu:
        kwargs["device_map"] = fsdp_device_map(model_args)
    return kwargs


def fsdp_device_map(model_args) -> dict[str, int] | None:
    """Where each FSDP process loads the model before it is sharded.

    TRL's default, ``device_map="auto"``, would spread every process's copy over all visible
    GPUs. A 4-bit model is quantized where it loads, so each process puts its own copy on
    its own GPU (about 6 GiB for 8B) and FSDP then shards it; a bf16 model loads on the CPU
    and FSDP moves the shards to the GPUs (with cpu_ram_efficient_loading, from rank 0's copy).
    """
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return None


def check_accelerator(model_args, training_args) -> None:
    """Refuse 4-bit and bf16 without a GPU (bitsandbytes loads 4-bit weights on a CPU silently),
    by the same rule that recipe validation applies, for configs built without it."""
    from recipekit.config.validate import check_hardware, gpu_available

    problems = check_hardware(
        {
            "load_in_4bit": model_args.load_in_4bit,
            "load_in_8bit": model_args.load_in_8bit,
            "bf16": training_args.bf16,
            "fp16": training_args.fp16,
            "use_cpu": training_args.use_cpu,
        },
        gpu=gpu_available(),
    )
    if problems:
        raise RecipeError(" ".join(problems))


def build_peft_and_quantization(model_args):
    """LoRA and bitsandbytes configs from the recipe, through TRL's own helpers."""
    from trl import get_peft_config, get_quantization_config

    return get_peft_config(model_args), get_quantization_config(model_args)


def keep_adapters_in_model_dtype(model) -> int | None:
    """Cast the trainable weights (the LoRA matrices, and any ``modules_to_save`` copies) to the dtype
    of the frozen base, for ``autocast_adapter_dtype: false``.

    PEFT upcasts adapters of a bf16 model to float32 (``get_peft_model(autocast_adapter_dtype=True)``),
    so each adapter casts its bf16 input to float32 and autocast casts it back for the matmul: on
    the 8B LoRA recipe that copying is ~7% of a step (bench/results/step_profile_h200_2026-11-30.json).
    TRL makes the same cast for quantized bases (``SFTTrainer.__init__``), after the PEFT wrap and
    before the optimizer exists, which is where this runs too; like TRL it leaves DoRA's magnitude
    vector in float32, whose small updates bf16 would round away. Returns how many tensors were
    cast, or None when the frozen weights mix float dtypes and there is no single one to follow.
    """
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()}
    if len(frozen) != 1:
        return None
    dtype = frozen.pop()
    cast = 0
    for name, param in model.named_parameters():
        if param.requires_grad and param.dtype != dtype and "lora_magnitude_vector" not in name:
            param.data = param.data.to(dtype)
            cast += 1
    return cast
