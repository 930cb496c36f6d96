"""``regional_compilation: true`` (with ``torch_compile: true``): accelerate compiles each decoder layer
on its own when the trainer prepares the model, and training follows the uncompiled run step by step."""

from __future__ import annotations

import pytest

from recipekit.errors import RecipeError
from recipekit.training.trainer import build_trainer
from tests.test_masking import make_recipe

STEPS = 22
MEASURED_RUN = ["--max_steps", str(STEPS), "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                "--load_best_model_at_end", "false", "--resume_from_checkpoint", ""]


def train_losses(tmp_path, model_dir, data_dir, *extra):
    trainer, _ = build_trainer(make_recipe(tmp_path, model_dir, data_dir, *MEASURED_RUN, *extra))
    trainer.train()
    return trainer, [row["loss"] for row in trainer.state.log_history if "loss" in row]


@pytest.mark.slow
@pytest.mark.parametrize("lora_forward", ["peft", "fused"])
def test_regionally_compiled_training_keeps_the_losses_of_the_uncompiled_run(tmp_path, tiny_model_dir,
                                                                              fiqa_jsonl_dir, lora_forward):
    """22 steps of the smoke recipe (padded batches of varying length, so shapes change and turn dynamic)
    with and without regional compilation, through PEFT's LoRA forward or the project's fused ones:
    every step's loss within 0.1%, each decoder layer compiled, the adapter saved as usual."""
    fused = ["--fused_lora_forward", "true", "--fused_lora_qkv", "true"] if lora_forward == "fused" else []
    _, plain = train_losses(tmp_path / "plain", tiny_model_dir, fiqa_jsonl_dir, *fused)
    compiled, losses = train_losses(tmp_path / "compiled", tiny_model_dir, fiqa_jsonl_dir, *fused,
                                    "--torch_compile", "true", "--regional_compilation", "true")
    assert len(plain) == len(losses) == STEPS
    for step, (reference, loss) in enumerate(zip(plain, losses), start=1):
        assert loss == pytest.approx(reference, rel=1e-3), f"step {step}"
    assert plain[-1] < plain[0]  # it trained: the comparison is not between two flat lines

    layers = compiled.model_wrapped.base_model.model.model.layers
    assert all(type(layer).__name__ == "OptimizedModule" for layer in layers)  # regional, not the whole model
    assert type(compiled.model_wrapped).__name__ != "OptimizedModule"
    compiled.save_model(str(tmp_path / "adapter"))  # saves the uncompiled model's adapter, as without compilation
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_regional_compilation_needs_torch_compile(tmp_path, tiny_model_dir, fiqa_jsonl_dir):
    with pytest.raises(RecipeError, match="regional_compilation: true.*torch_compile"):
        make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--regional_compilation", "true")
    for compiling in (["--torch_compile", "true"], ["--torch_compile_mode", "max-autotune-no-cudagraphs"]):
        recipe = make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--regional_compilation", "true", *compiling)
        assert recipe.recipe.regional_compilation is True and recipe.training.torch_compile is True


def test_the_switch_is_set_on_the_trainers_dynamo_plugin_without_compiling_anything(tmp_path, tiny_model_dir,
                                                                                    fiqa_jsonl_dir):
    """The key sets accelerate's own switch on the plugin the trainer built; nothing compiles before
    ``train`` prepares the model (building the trainer stays as fast as without it)."""
    trainer, _ = build_trainer(make_recipe(tmp_path, tiny_model_dir, fiqa_jsonl_dir, "--torch_compile", "true",
                                           "--regional_compilation", "true"))
    plugin = trainer.accelerator.state.dynamo_plugin
    assert plugin.use_regional_compilation is True and plugin.backend.value.lower() == "inductor"
    assert type(trainer.model_wrapped.base_model.model.model.layers[0]).__name__ == "LlamaDecoderLayer"
    plain, _ = build_trainer(make_recipe(tmp_path / "plain", tiny_model_dir, fiqa_jsonl_dir, "--torch_compile", "true"))
    assert not plain.accelerator.state.dynamo_plugin.use_regional_compilation  # torch_compile alone: the whole model
