"""The grouped q/k/v LoRA node computes what PEFT's graph computes, and steps aside wherever it does not apply."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from recipekit.fast_paths.fused_lora import FusedLinear, fuse_lora_forward
from recipekit.fast_paths.fused_qkv import LoraQKV, group_qkv_projections
from tests.test_fused_lora import loss_and_grads, tiny_lora_model


def grouped(model):
    fuse_lora_forward(model)
    return group_qkv_projections(model, (FusedLinear,))


def count_group_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real_apply = LoraQKV.apply
    monkeypatch.setattr(LoraQKV, "apply", lambda *a: calls.append(1) or real_apply(*a))
    return calls


def test_the_node_matches_its_formula_and_passes_gradcheck_in_float64():
    """Biases on the frozen layers, a different rank and scaling per projection, x with and without grad."""
    torch.manual_seed(0)
    tokens, hidden, outs, ranks, scalings = 5, 6, (6, 3, 3), (3, 2, 4), (0.7, 2.0, -1.3)
    bases = [torch.randn(o, hidden, dtype=torch.float64) for o in outs]
    biases = [torch.randn(o, dtype=torch.float64) for o in outs]
    lora_As = [torch.randn(r, hidden, dtype=torch.float64, requires_grad=True) for r in ranks]
    lora_Bs = [torch.randn(o, r, dtype=torch.float64, requires_grad=True) for o, r in zip(outs, ranks)]
    for x_grad in (True, False):
        x = torch.randn(2, tokens, hidden, dtype=torch.float64, requires_grad=x_grad)
        outputs = LoraQKV.apply(x, scalings, *bases, *biases, *lora_As, *lora_Bs)
        for out, W, b, A, B, s in zip(outputs, bases, biases, lora_As, lora_Bs, scalings):
            expected = x.reshape(-1, hidden) @ W.t() + b + s * (x.reshape(-1, hidden) @ A.t()) @ B.t()
            assert torch.allclose(out, expected)
        assert torch.autograd.gradcheck(
            lambda x, *adapters: LoraQKV.apply(x, scalings, *bases, *biases, *adapters), (x, *lora_As, *lora_Bs))


def tiny_biased_lora_model(target_modules, **lora_kwargs):
    """Attention with biases, and q, k, v adapters of different ranks and scalings."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64, attention_bias=True)
    lora = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=target_modules,
                      rank_pattern={"k_proj": 2, "v_proj": 6}, alpha_pattern={"v_proj": 3}, **lora_kwargs)
    model = get_peft_model(LlamaForCausalLM(config), lora)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def own_forward_calls(model) -> list[str]:
    """Names of the q/k/v projections whose frozen layer runs as a module (their own forward)."""
    calls: list[str] = []
    for name, module in model.named_modules():
        if name.endswith(("q_proj.base_layer", "k_proj.base_layer", "v_proj.base_layer")):
            module.register_forward_hook(lambda *a, name=name: calls.append(name))
    return calls


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "k_proj", "v_proj"]])
def test_grouped_projections_give_pefts_loss_and_gradients(monkeypatch, targets):
    peft_model = tiny_biased_lora_model(target_modules=targets)
    model = copy.deepcopy(peft_model)
    assert grouped(model) == 2  # one group per attention layer
    calls, own = count_group_calls(monkeypatch), own_forward_calls(model)
    input_ids = torch.randint(0, 64, (2, 12))
    peft_loss, peft_grads = loss_and_grads(peft_model, input_ids)
    loss, grads = loss_and_grads(model, input_ids)
    assert len(calls) == 2 and own == []  # the group ran in both layers; k and v took its outputs
    assert loss == pytest.approx(peft_loss.item(), rel=1e-5)
    assert grads.keys() == peft_grads.keys()
    for name, grad in peft_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), name
    assert all(grads[n].abs().sum() > 0 for n in grads if "lora_A" in n and "q_proj" in n)


def test_with_activation_checkpointing_the_recomputed_forward_groups_again(monkeypatch):
    peft_model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    model = copy.deepcopy(peft_model)
    grouped(model)
    for m in (peft_model, model):
        m.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.base_model.model.enable_input_require_grads()
        m.train()
    calls = count_group_calls(monkeypatch)
    input_ids = torch.randint(0, 64, (1, 10))
    peft_loss, peft_grads = loss_and_grads(peft_model, input_ids)
    loss, grads = loss_and_grads(model, input_ids)
    assert len(calls) == 4  # forward and the recompute, in each of 2 layers
    assert loss == pytest.approx(peft_loss.item(), rel=1e-5)
    for name, grad in peft_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_bf16_under_autocast_takes_the_group_and_is_as_close_to_float32_as_pefts_graph(monkeypatch):
    """bf16 rounds differently in the two graphs, so each is held against the float32 result:
    the grouped node's error must be of the size of PEFT's own bf16 error."""
    reference = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    peft_model = copy.deepcopy(reference).to(torch.bfloat16)
    model = copy.deepcopy(peft_model)
    grouped(model)
    calls = count_group_calls(monkeypatch)
    input_ids = torch.randint(0, 64, (1, 16))
    _, exact = loss_and_grads(reference, input_ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, peft_grads = loss_and_grads(peft_model, input_ids)
        _, grads = loss_and_grads(model, input_ids)
    assert len(calls) == 2

    def error(found: dict) -> float:
        return max(((found[n].float() - g).norm() / g.norm()).item() for n, g in exact.items())

    assert error(grads) <= 2 * error(peft_grads) + 1e-3, (error(grads), error(peft_grads))


def test_a_trained_base_bias_runs_each_layers_own_forward_and_gets_its_gradient(monkeypatch):
    peft_model = tiny_biased_lora_model(target_modules=["q_proj", "k_proj", "v_proj"], bias="all")
    model = copy.deepcopy(peft_model)
    grouped(model)
    calls = count_group_calls(monkeypatch)
    input_ids = torch.randint(0, 64, (1, 8))
    _, peft_grads = loss_and_grads(peft_model, input_ids)
    _, grads = loss_and_grads(model, input_ids)
    assert calls == []
    biases = [n for n in peft_grads if "k_proj.base_layer.bias" in n]
    assert biases and all(torch.allclose(grads[n], peft_grads[n], atol=1e-6) for n in biases)


def test_the_outputs_can_be_modified_in_place_as_pefts_can():
    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    grouped(model)
    attention = model.base_model.model.model.layers[0].self_attn
    scaled = []

    def scale_query_in_place(module, args, output):  # as some attention code scales q in place
        scaled.append(output.mul_(0.5).view(1, 5, 4, -1).transpose(1, 2).mul_(2.0))

    attention.q_proj.register_forward_hook(scale_query_in_place)
    x = torch.randn(1, 5, 32, requires_grad=True)
    attention.q_proj.qkv_group.reset(open_=True)  # as the attention module's pre-hook does
    (attention.q_proj(x).sum() + attention.k_proj(x).sum() + attention.v_proj(x).sum()).backward()
    assert scaled and x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["dropout", "disabled adapters", "float32 adapters on bf16 input",
                                  "autocast to another dtype"])
def test_every_other_case_runs_each_layers_own_forward(monkeypatch, case):
    model = tiny_lora_model(dropout=0.1 if case == "dropout" else 0.0, target_modules=["q_proj", "k_proj", "v_proj"])
    reference = copy.deepcopy(model).eval()
    grouped(model)
    model.eval()
    calls, own = count_group_calls(monkeypatch), own_forward_calls(model)
    input_ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        if case == "disabled adapters":
            with model.disable_adapter(), reference.disable_adapter():
                assert torch.allclose(model(input_ids=input_ids).logits, reference(input_ids=input_ids).logits)
        elif case == "float32 adapters on bf16 input":
            model.to(torch.bfloat16)
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.data = param.data.float()
            model(input_ids=input_ids)
        elif case == "autocast to another dtype":  # float32 weights, bf16 compute: each layer casts as PEFT's does
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(input_ids=input_ids)
        else:
            assert torch.allclose(model(input_ids=input_ids).logits, reference(input_ids=input_ids).logits)
    assert calls == [] and len(own) == 6  # q, k and v of both layers ran their own forward


def test_projections_called_on_their_own_compute_their_own_output(monkeypatch):
    """Outside a call of the attention module nothing is grouped, so nothing kept can go stale."""
    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    reference = copy.deepcopy(model)
    grouped(model)
    calls = count_group_calls(monkeypatch)
    attention = model.base_model.model.model.layers[0].self_attn
    expected = reference.base_model.model.model.layers[0].self_attn
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        assert torch.allclose(attention.q_proj(x), expected.q_proj(x), atol=1e-6)
        for name, param in attention.k_proj.named_parameters():
            if "lora_B" in name:
                param.mul_(3.0)  # changed after the q call
        with model.disable_adapter(), reference.disable_adapter():
            assert torch.allclose(attention.v_proj(x), expected.v_proj(x), atol=1e-6)
        assert not torch.allclose(attention.k_proj(x), expected.k_proj(x), atol=1e-3)  # k's new weights
    assert calls == []


def test_inside_the_attention_call_a_projection_given_another_tensor_computes_its_own():
    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    reference = copy.deepcopy(model)
    grouped(model)
    attention = model.base_model.model.model.layers[0].self_attn
    expected = reference.base_model.model.model.layers[0].self_attn
    x, other = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    group = attention.q_proj.qkv_group
    group.reset(open_=True)  # as the attention module's pre-hook does
    with torch.no_grad():
        assert torch.allclose(attention.q_proj(x), expected.q_proj(x), atol=1e-6)
        assert torch.allclose(attention.k_proj(other), expected.k_proj(other), atol=1e-6)  # not q's input
        assert torch.allclose(attention.v_proj(x), expected.v_proj(x), atol=1e-6)  # q's, kept for v
        assert 2 not in group.pending  # handed over once
        assert torch.allclose(attention.v_proj(x), expected.v_proj(x), atol=1e-6)
    model(input_ids=torch.randint(0, 64, (1, 4)))
    assert not group.open and group.pending == {} and group.pending_input is None  # closed after the call


def test_a_copied_or_pickled_model_keeps_its_groups_and_runs_its_own_weights(monkeypatch):
    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    grouped(model)
    input_ids = torch.randint(0, 64, (1, 7))
    copy_ = copy.deepcopy(model)
    for name, param in copy_.named_parameters():
        if "lora_B" in name:
            torch.nn.init.zeros_(param)
    calls = count_group_calls(monkeypatch)
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=input_ids).logits
        tuned = model(input_ids=input_ids).logits
        assert torch.allclose(copy_(input_ids=input_ids).logits, base, atol=1e-6)
        restored = pickle.loads(pickle.dumps(model))
        assert torch.equal(restored(input_ids=input_ids).logits, tuned)
    assert len(calls) == 6  # the model, its copy and the restored copy, 2 layers each
    attention = restored.base_model.model.model.layers[1].self_attn
    assert attention.q_proj.qkv_group is attention.v_proj.qkv_group
    assert attention.q_proj.qkv_group.layers[2] is attention.v_proj
    group = model.base_model.model.model.layers[0].self_attn.q_proj.qkv_group
    group.reset(open_=True)
    group.pending_input, group.pending = input_ids, {1: torch.ones(1), 2: torch.ones(1)}  # mid-call
    kept = pickle.loads(pickle.dumps(group))
    assert not kept.open and kept.pending == {} and kept.pending_input is None


def test_grouping_twice_is_a_no_op_and_4bit_or_partial_targets_get_none():
    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    assert grouped(model) == 2
    assert group_qkv_projections(model, (FusedLinear,)) == 0
    partial = tiny_lora_model(target_modules=["q_proj", "v_proj"])
    assert grouped(partial) == 0
    unfused = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    assert group_qkv_projections(unfused, (FusedLinear,)) == 0  # PEFT's layers, not the fused ones


def test_the_recipe_keys_install_it_and_refuse_it_without_the_fused_forward(tmp_path, tiny_model_dir,
                                                                             fiqa_jsonl_dir, capsys):
    from recipekit.errors import RecipeError
    from recipekit.training.trainer import build_trainer
    from tests.test_masking import make_recipe

    trainer, _ = build_trainer(make_recipe(tmp_path / "grouped", tiny_model_dir, fiqa_jsonl_dir,
                                           "--fused_lora_forward", "true", "--fused_lora_qkv", "true",
                                           "--max_steps", "2"))
    groups = {id(m.qkv_group) for m in trainer.model.modules() if getattr(m, "qkv_group", None) is not None}
    assert len(groups) == trainer.model.config.num_hidden_layers
    calls: list[int] = []
    real_apply = LoraQKV.apply
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LoraQKV, "apply", lambda *a: calls.append(1) or real_apply(*a))
        trainer.train()
    assert trainer.state.global_step == 2 and len(calls) >= 2 * len(groups)  # every layer, every step
    with pytest.raises(RecipeError, match="fused_lora_qkv: true.*fused_lora_forward"):
        make_recipe(tmp_path / "refused", tiny_model_dir, fiqa_jsonl_dir, "--fused_lora_qkv", "true")


@pytest.mark.parametrize("sharding", ["fsdp key", "deepspeed key", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_it_is_not_applied_under_fsdp_or_deepspeed(capsys, monkeypatch, sharding):
    from types import SimpleNamespace

    from recipekit.training.trainer import group_qkv_projections_or_say_why

    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    fuse_lora_forward(model)
    args = SimpleNamespace(fsdp=["full_shard"] if sharding == "fsdp key" else None,
                           deepspeed={"zero_optimization": {"stage": 3}} if sharding == "deepspeed key" else None)
    if sharding.startswith("ACCELERATE_"):
        monkeypatch.setenv(sharding, "true")  # what accelerate launch exports with such a config
    group_qkv_projections_or_say_why(model, args)
    assert "not applied under FSDP or DeepSpeed" in capsys.readouterr().out
    assert not any(getattr(m, "qkv_group", None) for m in model.modules())
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    group_qkv_projections_or_say_why(model, SimpleNamespace(fsdp=None, deepspeed=None))
    assert all(m.q_proj.qkv_group for m in model.modules() if hasattr(m, "q_proj"))
