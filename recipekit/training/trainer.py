"""Train one adapter from a parsed recipe: the body of ``recipes.run``.

Check the recipe against the machine, load the tokenizer and the JSONL splits, let TRL's
``SFTTrainer`` load the model (4-bit when asked), apply LoRA through PEFT and train with
completion-only loss, then save the adapter, the tokenizer, the resolved recipe and the
metrics in ``output_dir``. Stops on purpose (a signal, a non-finite loss, a failed write)
end as :class:`RunStopped` with the status to exit with.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from transformers import TrainerCallback

from recipekit.config.recipe import Recipe
from recipekit.config.values import evaluation_on
from recipekit.errors import ExitCode, RecipeError, RunStopped
from recipekit.fast_paths.varlen_attention import register_if_named
from recipekit.rundir.checkpoints import (
    adapter_rank_problem,
    clear_finished_run,
    resolve_resume,
    usable_checkpoints,
)
from recipekit.rundir.lock import RunLock, acquire_run_lock
from recipekit.inference.serving import write_serving_files
from recipekit.rundir.manifest import RunManifest, data_hashes, is_finished_run, resume_differences
from recipekit.runtime.atomic_io import atomic_write_text
from recipekit.runtime.guards import NonFiniteLossGuard, PreemptionCallback
from recipekit.runtime.out_of_memory import EvaluationPhase
from recipekit.runtime.signals import (
    STOP,
    StopBeforeTraining,
    any_process_signal,
    exit_code_for,
    signal_name,
)
from recipekit.training.training_data import TrainingData, data_files, load_training_data
from recipekit.training.failures import (
    failure_before_training,
    failure_during_training,
    stop_if_guarded,
    stopped_after_last_step,
)
from recipekit.training.model import (
    build_peft_and_quantization,
    check_accelerator,
    check_architecture,
    keep_adapters_in_model_dtype,
    load_tokenizer,
    model_init_kwargs,
)
from recipekit.training.model_card import render_model_card


def prepare_assets(recipe: Recipe) -> None:
    """Build the smoke recipe's offline model and data when it asks for them.

    Under several processes the main one builds them first; the others then find them.
    """
    if recipe.recipe.build_smoke_assets:
        from accelerate import PartialState

        from recipekit.training.smoke_assets import ensure_smoke_assets

        with PartialState().main_process_first():
            ensure_smoke_assets(recipe.model.model_name_or_path, recipe.recipe.data_dir)


def load_datasets(recipe: Recipe, tokenizer):
    """Train and eval sets after the truncation audit, with the audit's reports."""
    data = load_training_data(recipe, tokenizer)
    return data.datasets, data.reports


def build_trainer(recipe: Recipe, callbacks: list | None = None):
    """Everything up to a ready ``SFTTrainer``; returns it with its :class:`TrainingData`."""
    from trl import SFTTrainer

    model_args, args = recipe.model, recipe.training
    check_accelerator(model_args, args)
    prepare_assets(recipe)
    tokenizer = load_tokenizer(model_args, args)
    check_architecture(model_args, args)
    data = load_training_data(recipe, tokenizer)
    if recipe.recipe.overwrite_output_dir and is_finished_run(args.output_dir):
        # Only now, with the data and the model's shape known to be sound: a run refused for a bad
        # file must leave the finished run it would have replaced untouched.
        clear_finished_run(args.output_dir)
    peft_config, quantization_config = build_peft_and_quantization(model_args)
    args.model_init_kwargs = model_init_kwargs(model_args, args)
    # The Trainer would push inside save_model, before the card and manifest exist: the run is
    # published whole at the end instead (recipekit.rundir.publish).
    args.push_to_hub = False
    register_if_named(model_args.attn_implementation)  # torch_varlen: known to transformers before TRL loads
    plugin_callbacks = [
        callback
        for plugin in sorted(recipe.plugins, key=lambda p: p.order)
        for callback in plugin.callbacks(recipe)
    ]
    guards = [PreemptionCallback(), NonFiniteLossGuard(), EvaluationPhase()]
    try:
        trainer = make_trainer(SFTTrainer, recipe, data.datasets, tokenizer, peft_config, quantization_config,
                               [*guards, *plugin_callbacks, *(callbacks or [])])
    except TypeError as exc:
        if "model_init_kwargs" in recipe.resolved and "unexpected keyword argument" in str(exc):
            raise RecipeError(f"`model_init_kwargs` holds a key the model does not take: {exc}. Remove it "
                              "(from_pretrained's own arguments, e.g. low_cpu_mem_usage, are accepted).") from None
        raise
    if not recipe.recipe.autocast_adapter_dtype:
        keep_adapters_in_model_dtype_or_say_why(trainer.model)
    if recipe.recipe.fused_lora_forward:
        fuse_lora_forward_or_say_why(trainer.model)
    if recipe.recipe.fused_lora_qkv:
        group_qkv_projections_or_say_why(trainer.model, trainer.args)
    if recipe.recipe.regional_compilation:
        compile_regions_or_say_why(trainer)
    for plugin in recipe.plugins:
        plugin.on_trainer_ready(trainer, recipe)
    return trainer, data


def compile_regions_or_say_why(trainer) -> None:
    """``regional_compilation: true``: accelerate compiles the model region by region when the trainer
    prepares it (``accelerate.utils.compile_regions``: each decoder layer, one cache for all of them),
    with the backend and mode ``torch_compile`` gave its dynamo plugin. No compile code here: the
    switch accelerate's own config sets (``use_regional_compilation``), on the plugin the trainer built."""
    plugin = trainer.accelerator.state.dynamo_plugin
    if plugin is None or str(getattr(plugin.backend, "value", plugin.backend)).lower() == "no":
        print("note: regional_compilation: true found no torch.compile backend in the trainer's accelerator "
              "(torch_compile is off), so the model runs uncompiled.")
        return
    plugin.use_regional_compilation = True
    if kernels := liger_kernels_inside_the_layer(trainer.args):
        print(f"note: regional_compilation: true with use_liger_kernel: true patches Liger's {', '.join(kernels)} "
              "kernels into each decoder layer, and Liger 0.8.5's RoPE is a torch.compiler.disable'd call, so each "
              "layer compiles in pieces: on one H100 the LoRA recipe ran 4.4% slower compiled than not "
              "(bench/results/throughput_round9_h100_2026-12-07.json). To hand the whole layer to the compiler and "
              "keep Liger's fused cross-entropy, set `liger_kernel_config: {rope: false, rms_norm: false, "
              "swiglu: false}` (its speed is not measured yet).")
    if trainer.args.activation_checkpointing:
        # Each checkpointed layer would break the graph at the checkpoint: the `kernels` package's wrapper
        # of transformers' attention sets a context variable inside it, a side effect dynamo will not
        # replay in the recompute. The variable only picks a kernel for the forward being traced, so the
        # recompute needs no replay; with this the whole layer compiles as one graph (CPU: same losses).
        import torch._dynamo.config

        torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True


# Liger's kernels that replace parts of a decoder layer, each on unless `liger_kernel_config` sets it false.
LIGER_LAYER_KERNELS = ("rope", "rms_norm", "swiglu")


def liger_kernels_inside_the_layer(args) -> list[str]:
    """The Liger kernels a run patches into each decoder layer: what a compiled layer cannot fuse across."""
    if not getattr(args, "use_liger_kernel", False):
        return []
    config = getattr(args, "liger_kernel_config", None) or {}
    return [kernel for kernel in LIGER_LAYER_KERNELS if config.get(kernel, True)]


def keep_adapters_in_model_dtype_or_say_why(model) -> None:
    """``autocast_adapter_dtype: false``, with a note wherever it cannot take effect."""
    from recipekit.config.validate import launched_with_fsdp

    if launched_with_fsdp():
        print("note: autocast_adapter_dtype: false has no effect under FSDP, whose mixed precision keeps trainable "
              "weights in float32 (accelerate upcasts them when it shards the model).")
        return
    if keep_adapters_in_model_dtype(model) is None:
        print("note: autocast_adapter_dtype: false left the adapters in the dtype PEFT gave them: the frozen weights of "
              "this model mix float dtypes, so there is no single base dtype to follow.")


def fuse_lora_forward_or_say_why(model) -> None:
    """``fused_lora_forward: true``; a note when the model has no LoRA layer to fuse."""
    from recipekit.fast_paths.fused_lora import fuse_lora_forward

    if fuse_lora_forward(model) == 0:
        print("note: fused_lora_forward: true found no LoRA-wrapped linear layer (use_peft is off, or the adapters "
              "wrap another kind of layer), so PEFT's forward runs unchanged.")


def group_qkv_projections_or_say_why(model, args) -> None:
    """``fused_lora_qkv: true``; a note when no attention layer can take it. Not under FSDP or
    DeepSpeed: the grouped node reads weights that those gather through hooks it does not run."""
    from recipekit.config.validate import launched_with_deepspeed, launched_with_fsdp
    from recipekit.fast_paths.fused_lora import FusedLinear
    from recipekit.fast_paths.fused_qkv import group_qkv_projections

    if launched_with_fsdp() or launched_with_deepspeed() or args.fsdp or args.deepspeed:
        print("note: fused_lora_qkv: true is not applied under FSDP or DeepSpeed, which gather weights through hooks "
              "of the layers this grouping reads directly; each projection runs its own fused forward.")
        return
    if group_qkv_projections(model, (FusedLinear,)) == 0:
        print("note: fused_lora_qkv: true found no attention layer with LoRA on q_proj, k_proj and v_proj over plain "
              "linear layers (4-bit bases and other targets are not grouped), so each layer runs its own forward.")


def make_trainer(trainer_class, recipe: Recipe, datasets, tokenizer, peft_config, quantization_config, callbacks):
    """TRL's trainer, given the model by name as ``trl sft`` does: it loads it (4-bit when asked)."""
    model_args, args = recipe.model, recipe.training
    return trainer_class(
        model=model_args.model_name_or_path,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("eval"),
        processing_class=tokenizer,
        peft_config=peft_config,
        quantization_config=quantization_config,
        callbacks=callbacks,
    )


def trainable_parameters_line(model) -> str:
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.4g}%)"


def batch_line(args) -> str:
    per_device, accumulation, world = (
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.world_size,
    )
    unit = "packed sequences" if args.packing else "examples"
    return (
        f"world size {world}; effective batch {per_device * accumulation * world} {unit} "
        f"(per device {per_device} x accumulation {accumulation} x processes {world})"
    )


def save_run(trainer, recipe: Recipe, data: TrainingData, train_metrics: dict, eval_metrics: dict | None) -> None:
    """Adapter, tokenizer, resolved recipe, metrics and the truncation report, main process only;
    the tokenizer with the chat template and generation config a server needs to ask and stop
    as training did (``recipekit.inference.serving``)."""
    out = Path(recipe.training.output_dir)
    if trainer.is_fsdp_enabled:
        # Checkpoints stay sharded (fast, for resuming); the final adapter is gathered whole so
        # that PEFT, recipes.evaluate and recipes.merge can load it like any other.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(out))  # adapter + tokenizer (the trainer's processing_class)
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    if eval_metrics is not None:
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        header = f"# Resolved recipe `{recipe.name}` (from {recipe.path} and command-line overrides).\n"
        # The name goes in too, so a rerun from this file keeps it (its own stem is just "recipe").
        resolved = {"recipe_name": recipe.name, **{k: v for k, v in recipe.resolved.items() if k != "recipe_name"}}
        atomic_write_text(out / "recipe.yaml", header + yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_text(out / "data_report.json", json.dumps([r.as_dict() for r in data.reports], indent=2) + "\n")
        write_serving_files(out, trainer.processing_class, data.prompt_format,
                            getattr(trainer.model, "generation_config", None))


def run_training(trainer, recipe: Recipe, data: TrainingData) -> dict:
    """Train a built trainer, evaluate the kept (best) model, save the run; returns the metrics.

    Raises :class:`RunStopped` after a preemption (checkpoint saved) or a non-finite loss
    (nothing saved after the last good checkpoint).
    """
    say = trainer.accelerator.print
    args = recipe.training
    say(f"recipe {recipe.name}: {recipe.path}")
    for report in data.reports:
        say(f"data {report.describe()}")
    if recipe.recipe.datasets:
        for key, entry in data.sources.items():
            if "weight" in entry:
                say(f"mixture: {key}: {entry['rows_used']} rows of {entry['rows_trainable']}"
                    + (f" (weight {entry['weight']})" if entry["weight"] is not None else ""))
    say(trainable_parameters_line(trainer.model))
    say(batch_line(args))
    if args.resume_from_checkpoint == "auto":
        found, skipped = usable_checkpoints(args.output_dir)  # one scan: the choice and what it passed over
        resume = str(found) if found else None
        for path, problem in skipped:
            say(f"skipping {path}: {problem}")
        say(f"resuming from {resume}" if resume else f"no complete checkpoint in {args.output_dir}: starting fresh")
    else:
        resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    manifest = RunManifest(recipe, data.sources, prompt_format=data.prompt_format)
    STOP.training_started()  # from the manifest on, a signal checkpoints at the step's end (none yet: the first)
    if trainer.is_world_process_zero():
        manifest.write(resumed_from=resume)

    try:
        return finish_training(trainer, recipe, data, manifest, resume)
    except Exception as error:  # noqa: BLE001 - only failed writes and GPU memory are handled; the rest re-raises
        known = failure_during_training(trainer, recipe, manifest, error)
        if known is None:
            raise
        raise known from None


def finish_training(trainer, recipe: Recipe, data: TrainingData, manifest: RunManifest, resume: str | None) -> dict:
    """Train, then stop on a guard or a signal, or evaluate and save the run."""
    args = recipe.training
    say = trainer.accelerator.print
    result = trainer.train(resume_from_checkpoint=resume)

    stop_if_guarded(trainer, manifest)
    signum = any_process_signal(STOP.signum)  # a signal after the last step: save the adapter, skip the evaluation
    if signum is not None:
        save_run(trainer, recipe, data, result.metrics, None)
        raise stopped_after_last_step(trainer, manifest, result.metrics, signum)

    eval_metrics = trainer.evaluate() if trainer.eval_dataset is not None else None
    save_run(trainer, recipe, data, result.metrics, eval_metrics)
    metrics = {**result.metrics, **(eval_metrics or {})}
    for plugin in recipe.plugins:
        plugin.on_train_end(trainer, recipe, metrics)
    if trainer.is_world_process_zero():
        # After the plugins, so the loss chart the card shows is the final one.
        has_chart = (Path(args.output_dir) / "loss.png").is_file()
        atomic_write_text(Path(args.output_dir) / "README.md", render_model_card(recipe, metrics, has_chart))
        manifest.finish("finished", metrics=metrics, best_checkpoint=trainer.state.best_model_checkpoint)
    best = trainer.state.best_model_checkpoint
    say(f"adapter saved to {args.output_dir}" + (f" (best checkpoint: {best})" if best else ""))
    return metrics


def publish(recipe: Recipe) -> None:
    """Upload the finished run; a failed upload leaves the run saved and says how to upload it later."""
    from recipekit.rundir.publish import publish_run

    try:
        url = publish_run(recipe, recipe.recipe.push_merged_model)
    except Exception as exc:  # noqa: BLE001 - the network and the hub fail in many ways; the run is saved
        first = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).rstrip(".")
        raise RunStopped(
            f"the run finished and is saved in {recipe.training.output_dir}, but its upload to the Hugging Face Hub "
            f"failed: {first}. Upload it later with `hf upload {recipe.training.hub_model_id or 'REPO_ID'} "
            f"{recipe.training.output_dir} --exclude 'checkpoint-*'`.", exit_code=ExitCode.HUB_UNAVAILABLE) from None
    print(f"run published to {url}")


def check_resume_matches(recipe: Recipe) -> None:
    """Before the model loads: a resumed run must go on training what its checkpoint's run trained.

    Resuming with another learning rate, schedule, LoRA shape or data silently mixes two
    trainings in one adapter; the differences are listed and the run refused, unless the
    recipe says ``resume_despite_changes: true``.
    """
    args = recipe.training
    if recipe.recipe.overwrite_output_dir and is_finished_run(args.output_dir):
        return  # the old run is cleared, not resumed
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if resume is None:
        return
    if recipe.model.use_peft and (problem := adapter_rank_problem(resume, recipe.model.lora_r)):
        raise RecipeError(problem)  # no override: the saved matrices have another shape
    changes = resume_differences(recipe, data_hashes(data_files(recipe)))
    if not changes:
        return
    listed = "; ".join(changes)
    if recipe.recipe.resume_despite_changes:
        print(f"resuming from {resume} despite changes (resume_despite_changes): {listed}")
        return
    raise RecipeError(
        f"resuming from {resume}, but this run differs from the one that wrote it: {listed}. Resuming would mix "
        "two trainings in one adapter. Rerun with the original settings and data, choose another `output_dir`, "
        "or pass `--resume_despite_changes true` to continue anyway."
    )


def train(recipe: Recipe, callbacks: list | None = None) -> dict:
    """Run a parsed recipe end to end; returns the final metrics.

    Holds the output dir's run lock throughout (``recipekit.rundir.lock``) and owns SIGTERM and
    SIGINT while it runs (``recipekit.runtime.signals``): before training they stop at once,
    during training they checkpoint and stop, as :class:`RunStopped`.
    """
    STOP.reset()
    STOP.install()
    lock = None
    try:
        lock = acquire_run_lock(recipe.training.output_dir)  # one run per output_dir, before anything is written
        check_resume_matches(recipe)
        trainer, data = build_trainer(recipe, [*(callbacks or []), RunLockHeartbeat(lock)])
        metrics = run_training(trainer, recipe, data)
        end_run(trainer)
        publishing = bool(recipe.resolved.get("push_to_hub")) and trainer.is_world_process_zero()
    except (RunStopped, RecipeError):
        raise
    except Exception as error:  # noqa: BLE001 - a failed write or a full GPU before training began; the rest re-raises
        known = failure_before_training(error, recipe)
        if known is None:
            raise
        raise known from None
    except StopBeforeTraining as stop:
        raise RunStopped(
            f"{signal_name(stop.signum)} received before training began: stopped; nothing was trained or saved.",
            exit_code=exit_code_for(stop.signum),
        ) from None
    finally:
        STOP.finishing()
        if lock is not None:
            lock.release()
        STOP.release()
    if publishing:  # once every process is done and the run folder is released: the merge reads it
        publish(recipe)
    return metrics


def end_run(trainer) -> None:
    """Close the run as TRL's ``sft.py`` does, with ``trainer.end()``: trackers finished, the
    process group destroyed.

    Every process first waits for the others: the main process still writes the model card
    and manifest after the last collective step, and a rank that destroyed the group before
    the others were done left them waiting on it for ever.

    The DistributedDataParallel wrapper goes first, while the group still lives: freed after
    ``destroy_process_group`` (when ``train`` returned), its reducer's destructor locked gloo's
    process group while a gloo thread waited for the GIL, and the rank hung there for ever.
    """
    import gc

    trainer.accelerator.wait_for_everyone()
    if trainer.model_wrapped is not trainer.model:
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()  # its own references to the wrapped model, optimizer, loaders
        gc.collect()
    trainer.end()


class RunLockHeartbeat(TrainerCallback):
    """Touches the run lock at every log, so a lock whose run died on another host goes stale."""

    def __init__(self, lock: RunLock) -> None:
        self.lock = lock

    def on_log(self, args, state, control, **kwargs):
        self.lock.heartbeat()
