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


LORA_FORWARDS = {
    "peft": [],
    "fused": ["--fused_lora_forward", "true", "--fused_lora_qkv", "true"],
    "fused-checkpointing": ["--fused_lora_forward", "true", "--activation_checkpointing", "true"],  # the lean recipe's
}


@pytest.mark.slow
@pytest.mark.parametrize("lora_forward", sorted(LORA_FORWARDS))
def test_regionally_compiled_training_keeps_the_losses_of_the_uncompiled_run(tmp_path, tiny_model_dir,
                                                                              fiqa_jsonl_dir, lora_forward):
    """22 steps of the smoke recipe (padded batches of varying length, so shapes change and turn dynamic)
    with and without regional compilation, through PEFT's LoRA forward or the project's fused ones, with
    and without activation checkpointing: every step's loss within 0.1%, each decoder layer compiled
    without a break at the checkpoint, the adapter saved as usual."""
    from torch._dynamo.utils import counters

    fused = LORA_FORWARDS[lora_forward]
    _, plain = train_losses(tmp_path / "plain", tiny_model_dir, fiqa_jsonl_dir, *fused)
    counters.clear()
    compiled, losses = train_losses(tmp_path / "compiled", tiny_model_dir, fiqa_jsonl_dir, *fused,
                                    "--torch_compile", "true", "--regional_compilation", "true")
    assert not [reason for reason in counters["graph_break"] if "checkpoint" in reason]
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


@pytest.mark.slow
def test_a_4bit_base_with_lora_compiles_regionally_without_graph_breaks(tiny_model_dir):
    """QLoRA's layers under the same compilation: bitsandbytes 4-bit (its CPU kernels, NF4, nested
    quantization) with PEFT's LoRA forward and the fused one, accelerate's compile_regions against the
    uncompiled model on the same batches: no graph break, the same losses. bitsandbytes registers its
    4-bit ops with torch, so dynamo traces them as single ops; the GPU rows of bench/perf_round10.sh
    measure the CUDA side."""
    import torch
    from accelerate.utils import compile_regions
    from peft import LoraConfig, get_peft_model
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from recipekit.fast_paths.fused_lora import fuse_lora_forward

    def losses(compiled: bool, fused: bool) -> list[float]:
        torch.manual_seed(0)
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.float32)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quantization, device_map="cpu",
                                                     dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)  # a trained adapter: LoRA B starts at zero
        if fused:
            assert fuse_lora_forward(model) > 0
        run = compile_regions(model) if compiled else model
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        generator, seen = torch.Generator().manual_seed(1), []
        for length in (40, 64, 52, 64, 33, 47):  # lengths change: static, then dynamic shapes
            ids = torch.randint(0, 900, (2, length), generator=generator)
            loss = run(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seen.append(loss.item())
        return seen

    torch._dynamo.reset()
    counters.clear()
    for fused in (False, True):
        eager, compiled = losses(False, fused), losses(True, fused)
        assert compiled == pytest.approx(eager, rel=1e-4)
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_liger_kernels_inside_the_layer_are_named_with_the_way_to_turn_them_off(capsys):
    """On a GPU, Liger's RoPE is a torch.compiler.disable'd call, so a compiled layer breaks at it (round 9,
    one H100: the LoRA recipe 4.4% slower compiled); the run says so and names `liger_kernel_config`."""
    from types import SimpleNamespace

    from recipekit.training.trainer import compile_regions_or_say_why, liger_kernels_inside_the_layer

    def trainer(**args):
        plugin = SimpleNamespace(backend="INDUCTOR", use_regional_compilation=False)
        base = {"use_liger_kernel": True, "liger_kernel_config": None, "activation_checkpointing": False}
        return SimpleNamespace(accelerator=SimpleNamespace(state=SimpleNamespace(dynamo_plugin=plugin)),
                               args=SimpleNamespace(**{**base, **args}))

    assert liger_kernels_inside_the_layer(SimpleNamespace(use_liger_kernel=False)) == []
    assert liger_kernels_inside_the_layer(trainer().args) == ["rope", "rms_norm", "swiglu"]
    only_loss = {"rope": False, "rms_norm": False, "swiglu": False, "fused_linear_cross_entropy": True}
    assert liger_kernels_inside_the_layer(trainer(liger_kernel_config=only_loss).args) == []

    with_liger = trainer()
    compile_regions_or_say_why(with_liger)
    note = capsys.readouterr().out
    assert with_liger.accelerator.state.dynamo_plugin.use_regional_compilation is True
    assert "rope, rms_norm, swiglu" in note and "liger_kernel_config" in note and "4.4% slower" in note
    compile_regions_or_say_why(trainer(liger_kernel_config=only_loss))
    assert capsys.readouterr().out == ""
