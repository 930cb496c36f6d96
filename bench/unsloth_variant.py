"""Unsloth as a baseline for bench/throughput.py: the same random-weight model folder, the same FiQA
prompt/completion JSONL and the same per-step measurement (plugins.throughput.ThroughputCallback),
but trained the way Unsloth's documentation and notebooks do it:

* ``FastLanguageModel.from_pretrained``: Unsloth's loader, which patches the Llama modules with its
  Triton kernels (RoPE, RMSNorm, SwiGLU, fused cross-entropy) and quantizes to NF4 on load for QLoRA;
* ``FastLanguageModel.get_peft_model`` with ``use_gradient_checkpointing="unsloth"``: its
  offloaded activation checkpointing, on q/k/v/o/gate/up/down with dropout 0 and no bias (the
  settings its fast LoRA kernels need);
* TRL's ``SFTTrainer`` as patched by ``import unsloth``, with ``padding_free`` left unset: Unsloth
  then turns padding-free batching on by itself (its default since 2025.12; on an H100/H200 its
  padded-vs-padding-free chooser has no measurement and keeps padding-free), and
  ``packing=True`` is available as an override;
* ``optim="adamw_8bit"``, lr 2e-4, linear schedule, weight decay 0.001, seed 3407: its notebooks'
  values (none of them changes the speed of a step much).

Variants: ``unsloth-qlora`` (4-bit NF4 base) and ``unsloth-lora`` (bf16 base), optionally followed by
``--key value`` overrides of DEFAULTS, e.g. ``--variant "unsloth-lora-packed=unsloth-lora --packing
true"``. Unsloth pins trl <= 1.15, transformers <= 5.17 and datasets < 5, so it runs from its own
``pip install --target`` dir (bench/unsloth_wheels.sh), which bench/throughput.py puts first on the
worker's PYTHONPATH (``--unsloth_site``); this module imports nothing from it at import time, so the
harness and its tests load it without Unsloth installed.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

KIND = "unsloth"

# What each named variant loads: QLoRA quantizes the bf16 folder to NF4 while loading it; LoRA keeps
# the base in bf16 (Unsloth's `load_in_16bit = True  # 16-bit LoRA`).
VARIANTS = {
    "unsloth-qlora": {"load_in_4bit": True},
    "unsloth-lora": {"load_in_4bit": False},
}

# Offline, Unsloth must not reach the Hub: no statistics ping (a README download on first load), no
# hub lookups of the local folder's name, and unsloth_zoo turns hf_transfer off when it sees these.
OFFLINE_ENV = {
    "UNSLOTH_DISABLE_STATISTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}

DEFAULTS = {
    # 2048: Unsloth's default and every notebook's; the longest FiQA-sample example is ~1.5k tokens
    # (~283 on average), so nothing is cut, and with padding-free batches it is only a cap (each
    # row keeps its own length). With --packing true it is the length of a pack.
    "max_seq_length": 2048,
    "lora_r": 16,                 # Unsloth's notebooks and LoRA guide: r 16 (8-128 fine)
    "lora_alpha": 32,             # its guide: alpha = r or 2r; the scale does not change the speed
    "lora_dropout": 0.0,          # 0 is what its fused LoRA kernels are optimised for
    "use_gradient_checkpointing": "unsloth",   # its offloaded checkpointing: ~30% less VRAM
    # Unsloth's notebooks use 2 x 4 on a 15 GB T4; its guide says to raise the batch rather than the
    # accumulation when memory allows, and its padding-free work measured the gain on Llama-3-8B
    # from batch 4 up, at 8 (unslothai/unsloth#3672). On an 80+ GB GPU: 8 rows, one micro batch a
    # step, like the other variants of this harness (whose steps are one micro batch too).
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "packing": False,             # TRL's default; Unsloth auto-enables padding-free instead
    "padding_free": None,         # None: Unsloth decides (padding-free for text SFT); true/false forces
    "optim": "adamw_8bit",
    "learning_rate": 2e-4,
    "weight_decay": 0.001,
    "lr_scheduler_type": "linear",
    "warmup_steps": 5,
    "seed": 3407,
}

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def is_unsloth_variant(text: str) -> bool:
    """``unsloth-qlora`` / ``unsloth-lora`` as written on the command line (overrides allowed after)."""
    return text.split(" ", 1)[0] in VARIANTS


def _coerce(key: str, value: str):
    default = DEFAULTS[key]
    if isinstance(default, bool) or default is None:
        lowered = value.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        if default is None and lowered in ("none", "auto", ""):
            return None
        raise SystemExit(f"error: --{key} takes true or false, not {value!r}")
    try:
        return type(default)(value)
    except ValueError:
        return value  # e.g. use_gradient_checkpointing true/false as text; resolved below


def parse_overrides(text: str) -> dict:
    """``--key value`` pairs over DEFAULTS, typed like the default they replace."""
    words = shlex.split(text or "")
    if len(words) % 2:
        raise SystemExit(f"error: unsloth overrides must be --key value pairs, got {text!r}")
    out = {}
    for flag, value in zip(words[::2], words[1::2]):
        key = flag.removeprefix("--")
        if not flag.startswith("--") or key not in DEFAULTS:
            raise SystemExit(f"error: unknown unsloth override {flag!r}; known: {', '.join(sorted(DEFAULTS))}")
        out[key] = _coerce(key, value)
    return out


def resolve_settings(spec: dict) -> dict:
    """The settings a run uses: the variant's load mode, DEFAULTS, then the spec's overrides."""
    base = spec.get("base", spec["name"])
    if base not in VARIANTS:
        raise SystemExit(f"error: unknown unsloth variant {base!r}; known: {', '.join(VARIANTS)}")
    settings = {"variant": base, **VARIANTS[base], **DEFAULTS, **parse_overrides(spec.get("overrides", ""))}
    gc = settings["use_gradient_checkpointing"]
    if isinstance(gc, str) and gc.lower() in ("true", "false"):
        settings["use_gradient_checkpointing"] = gc.lower() == "true"
    settings["lora_target_modules"] = TARGET_MODULES
    return settings


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("unsloth", "unsloth_zoo", "trl", "transformers", "peft", "torch", "bitsandbytes", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _attention_backend() -> str:
    """Which attention kernels Unsloth can use: flash-attn or xformers when installed, else PyTorch
    SDPA (Unsloth picks the first one present; read from what is installed, not Unsloth's internals)."""
    from importlib.util import find_spec

    if find_spec("flash_attn") is not None:
        return "flash_attn"
    if find_spec("xformers") is not None:
        return "xformers"
    return "sdpa"


def run_unsloth_variant(spec: dict) -> dict:
    """Train ``spec["warmup"] + spec["steps"]`` optimizer steps with Unsloth; return the log history
    (one entry a step, with ThroughputCallback's tokens/s and step time) and the settings used."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # Unsloth writes the trainer code it generates to ./unsloth_compiled_cache and imports it from
    # there; keep it with the run's outputs rather than in whatever directory the harness runs in.
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(Path(spec["output_dir"]).resolve() / "unsloth_compiled_cache"))
    settings = resolve_settings(spec)

    # Unsloth first: it patches transformers, peft and trl as it is imported, and warns (and runs
    # unpatched code) when they were imported before it.
    import torch
    import unsloth  # noqa: F401
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    from plugins.throughput import ThroughputCallback

    gpu = torch.cuda.is_available()
    qlora = settings["load_in_4bit"]
    if qlora and not gpu:
        raise SystemExit("error: unsloth-qlora needs a CUDA GPU (bitsandbytes NF4)")
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=spec["model_dir"],
        max_seq_length=settings["max_seq_length"],
        dtype=torch.bfloat16,
        load_in_4bit=qlora,
        load_in_16bit=not qlora,
        full_finetuning=False,
        use_exact_model_name=True,   # a local folder: no name mapping to unsloth/* hub repos
        local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=settings["lora_r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=settings["lora_dropout"],
        target_modules=TARGET_MODULES,
        bias="none",
        use_gradient_checkpointing=settings["use_gradient_checkpointing"],
        random_state=settings["seed"],
    )

    dataset = load_dataset("json", data_files=str(Path(spec["data_dir"]) / "train.jsonl"), split="train")
    optional = {} if settings["padding_free"] is None else {"padding_free": settings["padding_free"]}
    config = SFTConfig(
        output_dir=spec["output_dir"],
        max_steps=spec["warmup"] + spec["steps"],
        per_device_train_batch_size=settings["per_device_train_batch_size"],
        gradient_accumulation_steps=settings["gradient_accumulation_steps"],
        max_length=settings["max_seq_length"],
        packing=settings["packing"],
        completion_only_loss=True,   # loss on the answer only, as in the project's recipes
        optim=settings["optim"] if gpu else "adamw_torch",
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        lr_scheduler_type=settings["lr_scheduler_type"],
        warmup_steps=settings["warmup_steps"],
        seed=settings["seed"],
        bf16=gpu,
        logging_steps=spec.get("log_every", 1),
        save_strategy="no",
        report_to="none",
        # What ThroughputCallback divides by the step time. The trainer's count reads a number from the GPU
        # every step (the recipes leave it off: +3.3% QLoRA); it stays on here because Unsloth compiles its own
        # copy of TRL's trainer, whose num_tokens log is not checked. Compare against recipe rows that count too.
        include_num_input_tokens_seen="non_padding",
        **optional,
    )
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=dataset.select_columns(["prompt", "completion"]),
        args=config,
        callbacks=[ThroughputCallback()],
    )
    trainer.train()

    history = trainer.state.log_history
    if not any(row.get("num_input_tokens_seen") for row in history):
        raise RuntimeError("Unsloth's training loop counted no input tokens: tokens/s cannot be measured")
    settings.update(
        requested={"packing": settings["packing"], "padding_free": settings["padding_free"]},
        packing=bool(getattr(trainer.args, "packing", False)),   # as Unsloth resolved it
        padding_free=getattr(trainer.args, "padding_free", None),   # as Unsloth resolved it
        optim=str(trainer.args.optim.value if hasattr(trainer.args.optim, "value") else trainer.args.optim),
        attention=_attention_backend(),
        versions=_versions(),
    )
    return {"log_history": history, "settings": settings}
