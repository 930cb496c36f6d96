"""The grouped q/k/v LoRA node computes what PEFT's graph computes, and steps aside wherever it does not apply."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from recipes.fused_lora import FusedLinear, fuse_lora_forward
from recipes.fused_qkv import LoraQKV, group_qkv_projections
from tests.test_fused_lora import loss_and_grads, tiny_lora_model


def grouped(model):
    fuse_lora_forward(model)
    return group_qkv_projections(model, (FusedLinear,))


def count_group_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real_apply = LoraQKV.apply
    monkeypatch.setattr(LoraQKV, "apply", lambda *a: calls.append(1) or real_apply(*a))
    return calls


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "k_proj", "v_proj"]])
def test_grouped_projections_give_pefts_loss_and_gradients(monkeypatch, targets):
    peft_model = tiny_lora_model(target_modules=targets)
    model = copy.deepcopy(peft_model)
    assert grouped(model) == 2  # one group per attention layer
    calls = count_group_calls(monkeypatch)
    input_ids = torch.randint(0, 64, (2, 12))
    peft_loss, peft_grads = loss_and_grads(peft_model, input_ids)
    loss, grads = loss_and_grads(model, input_ids)
    assert len(calls) == 2  # the group ran in both layers
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


@pytest.mark.parametrize("case", ["dropout", "disabled adapters", "float32 adapters on bf16 input",
                                  "autocast to another dtype"])
def test_every_other_case_runs_each_layers_own_forward(monkeypatch, case):
    model = tiny_lora_model(dropout=0.1 if case == "dropout" else 0.0, target_modules=["q_proj", "k_proj", "v_proj"])
    reference = copy.deepcopy(model).eval()
    grouped(model)
    model.eval()
    calls = count_group_calls(monkeypatch)
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
    assert calls == []


def test_projections_called_out_of_order_or_alone_compute_their_own_output():
    model = tiny_lora_model(target_modules=["q_proj", "k_proj", "v_proj"])
    reference = copy.deepcopy(model)
    grouped(model)
    attention = model.base_model.model.model.layers[0].self_attn
    expected = reference.base_model.model.model.layers[0].self_attn
    x, other = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert torch.allclose(attention.q_proj(x), expected.q_proj(x), atol=1e-6)
        assert torch.allclose(attention.k_proj(other), expected.k_proj(other), atol=1e-6)  # not q's input
        assert torch.allclose(attention.v_proj(x), expected.v_proj(x), atol=1e-6)  # q's, kept for v
        assert torch.allclose(attention.v_proj(x), expected.v_proj(x), atol=1e-6)  # used once: computed again
        assert torch.allclose(attention.k_proj(x), expected.k_proj(x), atol=1e-6)


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
    from recipes.errors import RecipeError
    from recipes.training import build_trainer
    from tests.test_masking import make_recipe

    trainer, _ = build_trainer(make_recipe(tmp_path / "grouped", tiny_model_dir, fiqa_jsonl_dir,
                                           "--fused_lora_forward", "true", "--fused_lora_qkv", "true",
                                           "--max_steps", "2"))
    groups = {id(m.qkv_group) for m in trainer.model.modules() if getattr(m, "qkv_group", None) is not None}
    assert len(groups) == trainer.model.config.num_hidden_layers
    trainer.train()
    assert trainer.state.global_step == 2
    with pytest.raises(RecipeError, match="fused_lora_qkv: true.*fused_lora_forward"):
        make_recipe(tmp_path / "refused", tiny_model_dir, fiqa_jsonl_dir, "--fused_lora_qkv", "true")
