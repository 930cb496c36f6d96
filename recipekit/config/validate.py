"""Checks of a recipe's values before anything loads: ranges, combinations, files, hardware.

Each check returns a sentence that names the problem and the fix. ``parse_recipe`` runs
them all and reports every problem at once, so a long GPU job never starts on a recipe
that would fail after the model has loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipekit.config.values import as_text, evaluation_on


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU (imports torch: only once the recipe is otherwise sound)."""
    import torch

    return torch.cuda.is_available()


def surely_no_gpu() -> bool:
    """True when no CUDA GPU can be visible, known without importing torch (seconds): no NVIDIA
    driver on this Linux machine, a Mac, or CUDA_VISIBLE_DEVICES hiding every GPU. False
    means "maybe": then torch is asked, once everything else in the recipe is right."""
    import os
    import sys

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    if sys.platform == "darwin":
        return True
    if sys.platform.startswith("linux"):
        return not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists()
    return False


def check_ranges(v: dict[str, Any]) -> list[str]:
    problems = []
    if not 0 < v["learning_rate"] < 1:
        problems.append(f"`learning_rate` is {v['learning_rate']}: use a value in (0, 1), e.g. 2e-4 for LoRA.")
    if v["num_train_epochs"] <= 0 and v["max_steps"] <= 0:
        problems.append(
            f"nothing to train: `num_train_epochs` is {v['num_train_epochs']} and `max_steps` is {v['max_steps']}. "
            "Set num_train_epochs above 0 (e.g. 3) or max_steps above 0."
        )
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if v[key] < 1:
            problems.append(f"`{key}` is {v[key]}: it must be at least 1.")
    if v["use_peft"]:
        if v["lora_r"] < 1:
            problems.append(f"`lora_r` is {v['lora_r']}: the LoRA rank must be at least 1 (8 to 64 is usual).")
        if v["lora_alpha"] <= 0:
            problems.append(f"`lora_alpha` is {v['lora_alpha']}: it must be positive (often 2 to 4 x lora_r).")
        if not 0 <= v["lora_dropout"] < 1:
            problems.append(f"`lora_dropout` is {v['lora_dropout']}: use a value in [0, 1), e.g. 0.05.")
    if v["max_length"] is not None and v["max_length"] < 1:
        problems.append(f"`max_length` is {v['max_length']}: it must be a positive number of tokens, e.g. 2048.")
    for key in ("warmup_steps", "weight_decay", "max_grad_norm"):
        if v[key] is not None and v[key] < 0:
            problems.append(f"`{key}` is {v[key]}: it cannot be negative.")
    for key in ("logging_steps", "save_steps"):
        if v[key] is not None and v[key] <= 0:
            problems.append(f"`{key}` is {v[key]}: it must be positive.")
    if v["eval_steps"] is not None and v["eval_steps"] <= 0:
        problems.append(f"`eval_steps` is {v['eval_steps']}: it must be positive.")
    if not 0 <= v["seed"] < 2**32:
        problems.append(f"`seed` is {v['seed']}: use a value in [0, 2**32) (numpy's seed range), e.g. 42.")
    if v["save_total_limit"] is not None and v["save_total_limit"] < 1:
        problems.append(f"`save_total_limit` is {v['save_total_limit']}: keep at least 1 checkpoint.")
    return problems


GENERATION_EVAL = "plugins.generation_eval.GenerationEval"


def check_combinations(v: dict[str, Any]) -> list[str]:
    problems = []
    if v["packing"] and v["max_length"] is None:
        problems.append("`packing: true` needs `max_length` (the length of each packed sequence), e.g. 2048.")
    if v["load_in_4bit"] and v["load_in_8bit"]:
        problems.append("`load_in_4bit` and `load_in_8bit` are both on: choose one (4-bit for QLoRA).")
    evaluation, saving = as_text(v["eval_strategy"]), as_text(v["save_strategy"])
    if v["load_best_model_at_end"]:
        if evaluation == "no":
            problems.append(
                "`load_best_model_at_end: true` needs evaluation to choose the best checkpoint, but "
                "`eval_strategy` is no. Set eval_strategy: steps (or epoch), or load_best_model_at_end: false."
            )
        elif saving != evaluation and saving != "best":
            problems.append(
                f"`load_best_model_at_end: true` needs checkpoints where evaluations happen, but `save_strategy` is "
                f"{saving} and `eval_strategy` is {evaluation}. Set both to the same value."
            )
        elif evaluation == "steps" and saving == "steps":
            eval_steps = v["eval_steps"] or v["logging_steps"]
            if eval_steps and v["save_steps"] and v["save_steps"] % eval_steps:
                problems.append(
                    f"`save_steps` ({v['save_steps']}) is not a multiple of `eval_steps` ({eval_steps}), so the best "
                    "evaluated step may have no checkpoint. Make save_steps a multiple of eval_steps (equal is simplest)."
                )
    metric = str(v.get("metric_for_best_model") or "")
    answer_metrics = ("similarity", "rougeL", "answer_words", "short_answers")
    if metric.removeprefix("eval_") in answer_metrics and GENERATION_EVAL not in (v.get("plugins") or []):
        problems.append(
            f"`metric_for_best_model: {metric}` is computed by the plugin {GENERATION_EVAL}, which the recipe does not "
            "list. Add it to `plugins:`, or choose by eval_loss."
        )
    if v.get("autocast_adapter_dtype") is False and v["fp16"]:
        problems.append(
            "`autocast_adapter_dtype: false` with `fp16: true` would train float16 adapter weights, whose gradients "
            "the fp16 loss scaler refuses to unscale. Use bf16: true (the recipes' setting), or leave "
            "autocast_adapter_dtype at true."
        )
    if v.get("push_merged_model") and not v["push_to_hub"]:
        problems.append("`push_merged_model: true` uploads the merged model with the run, but `push_to_hub` is false. "
                        "Set push_to_hub: true (with hub_model_id), or merge locally with `python -m recipes.merge`.")
    if v.get("fused_lora_qkv") and not v.get("fused_lora_forward"):
        problems.append(
            "`fused_lora_qkv: true` groups layers that have the fused LoRA forward, but `fused_lora_forward` is false. "
            "Set fused_lora_forward: true as well, or fused_lora_qkv: false."
        )
    compiling = v.get("torch_compile") or v.get("torch_compile_backend") or v.get("torch_compile_mode")
    if v.get("regional_compilation") and not compiling:
        problems.append(
            "`regional_compilation: true` says how `torch_compile` compiles the model (layer by layer), but "
            "`torch_compile` is false. Set torch_compile: true as well, or regional_compilation: false."
        )
    if v.get("dataset_text_field", "text") != "text":
        from recipekit.training.sources import DATASETS_EXAMPLE

        problems.append("`dataset_text_field` names a plain-text column for `trl sft`; this project trains on "
                        "question/answer examples and does not read it. Map your columns in `datasets:` instead, "
                        f"e.g.\n{DATASETS_EXAMPLE}")
    if not v.get("model_name_or_path"):
        problems.append("`model_name_or_path` is not set: name a hub model or a local folder.")
    return problems


def launched_with_fsdp() -> bool:
    """``accelerate launch`` with an FSDP config exports ACCELERATE_USE_FSDP to every process."""
    return _launch_flag("ACCELERATE_USE_FSDP")


def launched_with_deepspeed() -> bool:
    """``accelerate launch`` with a DeepSpeed config exports ACCELERATE_USE_DEEPSPEED likewise."""
    return _launch_flag("ACCELERATE_USE_DEEPSPEED")


def _launch_flag(name: str) -> bool:
    import os

    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def check_launch(v: dict[str, Any]) -> list[str]:
    """Combinations of the recipe and the accelerate launch config that fail only after loading."""
    if not launched_with_fsdp():
        return []
    problems = []
    if not gpu_available():
        problems.append(
            "this run was launched with an FSDP config, but no CUDA GPU is visible: FSDP shards the model over "
            "GPUs, and without them each process would train its own copy. On a CPU machine launch with "
            "accelerate_configs/cpu.yaml or cpu_multi_process.yaml (with ACCELERATE_USE_CPU=true)."
        )
    storage = as_text(v.get("bnb_4bit_quant_storage") or "uint8")
    if v["load_in_4bit"] and storage not in ("bfloat16", "float16", "float32"):
        problems.append(
            f"FSDP shards only floating-point tensors, but this 4-bit recipe stores its weights as {storage}, so "
            "they would stay whole on every GPU or fail to shard. Add `bnb_4bit_quant_storage: bfloat16` to the "
            "recipe (or pass --bnb_4bit_quant_storage bfloat16); the nemotron QLoRA recipes already set it."
        )
    return problems


def check_output_dir(v: dict[str, Any]) -> list[str]:
    from recipekit.rundir.manifest import is_finished_run

    problems = []
    if v["output_dir"] and is_finished_run(v["output_dir"]) and not v["overwrite_output_dir"]:
        problems.append(
            f"`output_dir` {v['output_dir']} holds a finished run. Choose another output_dir, or set "
            "`overwrite_output_dir: true` (or --overwrite_output_dir true) to replace it."
        )
    for name in ("run_manifest.json", ".run.lock"):
        if v["output_dir"] and (Path(v["output_dir"]) / name).is_dir():
            problems.append(f"{Path(v['output_dir']) / name} is a folder where the run keeps a file; remove it or "
                            "choose another `output_dir`.")
    resume = v.get("resume_from_checkpoint")
    if resume and resume != "auto" and not Path(resume).is_dir():
        problems.append(
            f"`resume_from_checkpoint` {resume} is not a folder. Give a checkpoint-N folder of the run, or `auto` "
            "for the newest complete one in output_dir."
        )
    return problems


def check_files(v: dict[str, Any]) -> list[str]:
    problems = check_output_dir(v)
    if v.get("build_smoke_assets"):
        return problems  # the data is built on demand
    from types import SimpleNamespace

    from recipekit.training.data import preprocess_hint, split_path
    from recipekit.training.sources import recipe_sources, source_file_problem

    sources = recipe_sources(SimpleNamespace(datasets=v.get("datasets"), data_dir=v["data_dir"]))
    folders = [s for s in sources if s.kind == "folder" or not v.get("datasets")]
    for index, source in enumerate(sources):
        if source in folders:
            train_file = split_path(source.path, v["train_split"])
            if not train_file.is_file():
                where = "`data_dir`" if not v.get("datasets") else f"`datasets` {source.label(index)}"
                problems.append(
                    f"the training data {train_file} does not exist. Write it with `{preprocess_hint(source.path)}`, "
                    f"or point {where} at the folder that holds it."
                )
        elif problem := source_file_problem(source, index):
            problems.append(problem)
    if evaluation_on(v["eval_strategy"]):
        eval_files = [split_path(s.path, v["eval_split"]) for s in folders] if v["eval_split"] else []
        if not any(f.is_file() for f in eval_files):
            where = ", ".join(map(str, eval_files)) or "(no eval_split)"
            problems.append(
                f"evaluation is on (`eval_strategy: {as_text(v['eval_strategy'])}`) but the evaluation data "
                f"{where} does not exist (files and hub sources in `datasets:` are trained on, not evaluated). "
                "Preprocess it, set `eval_split`, or set `eval_strategy: no` (and `load_best_model_at_end: false`)."
            )
    return problems


def check_packages(v: dict[str, Any]) -> list[str]:
    import importlib.util

    from huggingface_hub import constants

    from recipekit.config.trackers import tracker_problems

    problems = []
    if v["push_to_hub"] and constants.HF_HUB_OFFLINE:
        problems.append(
            "`push_to_hub: true` uploads the finished run to the Hugging Face Hub, and HF_HUB_OFFLINE is set, so "
            "the upload would fail after training. Unset HF_HUB_OFFLINE on a machine that reaches the hub, or set "
            "push_to_hub: false and upload the output_dir later."
        )
    problems += tracker_problems(v.get("report_to"))
    if v["use_liger_kernel"] and importlib.util.find_spec("liger_kernel") is None:
        problems.append(
            "`use_liger_kernel: true` needs the package liger-kernel, which is not installed. Run "
            '`pip install -e ".[gpu]"`, or set use_liger_kernel: false.'
        )
    return problems


def check_hardware(v: dict[str, Any], gpu: bool) -> list[str]:
    if gpu and not v["use_cpu"]:
        return []
    wants = []
    if v["load_in_4bit"] or v["load_in_8bit"]:
        wants.append("bitsandbytes quantization (load_in_4bit / load_in_8bit)")
    if (v["bf16"] is not False and not v["fp16"]) and not v["use_cpu"]:
        wants.append("bf16 mixed precision")
    if v["fp16"]:
        wants.append("fp16 mixed precision")
    if not wants:
        return []
    return [no_gpu_advice(" and ".join(wants))]


def no_gpu_advice(wants: str) -> str:
    """What to do when a recipe needs a CUDA GPU and none is visible: the one wording of it."""
    return (f"this recipe asks for {wants}, which needs a CUDA GPU, and none is visible. Run it on a GPU machine; "
            "for a CPU run use `--load_in_4bit false --bf16 false --dtype float32`, or the smoke recipe "
            "(recipes/smoke.yaml).")


def check_values(values: dict[str, Any], check_environment: bool = True) -> list[str]:
    """Every problem of a recipe's values that can be found without importing torch, as sentences."""
    problems = check_ranges(values) + check_combinations(values)
    if check_environment:
        problems += check_files(values) + check_packages(values)
        if surely_no_gpu():
            problems += check_hardware(values, gpu=False)
    return problems


def check_machine(values: dict[str, Any]) -> list[str]:
    """The checks that need torch (is a GPU visible?) and the launch config: run last, when the
    recipe is otherwise sound, so that a typo is answered before torch has loaded."""
    from recipekit.config.hub import hub_problem

    problems = [] if surely_no_gpu() else check_hardware(values, gpu=gpu_available())
    problems += check_launch(values)
    if not problems and (problem := hub_problem(values)):  # the network, last: seconds where the rest took none
        problems.append(problem)
    return problems
