"""The fused LoRA forward computes what PEFT's computes, and steps aside wherever it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch

from recipekit.fast_paths.fused_lora import FusedForward, fuse_lora_forward


def tiny_lora_model(dropout: float = 0.0, target_modules="all-linear", **lora_kwargs):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64)
    model = get_peft_model(LlamaForCausalLM(config),
                           LoraConfig(r=4, lora_alpha=16, lora_dropout=dropout, target_modules=target_modules,
                                      **lora_kwargs))
    for name, param in model.named_parameters():  # PEFT starts B at zero; a trained adapter is not
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def loss_and_grads(model, input_ids):
    model.zero_grad()
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fused_forward_gives_pefts_loss_and_gradients():
    peft_model = tiny_lora_model()
    fused_model = copy.deepcopy(peft_model)
    assert fuse_lora_forward(fused_model) == 14  # q,k,v,o,gate,up,down in each of 2 layers
    input_ids = torch.randint(0, 64, (2, 12))
    peft_loss, peft_grads = loss_and_grads(peft_model, input_ids)
    fused_loss, fused_grads = loss_and_grads(fused_model, input_ids)
    assert fused_loss == pytest.approx(peft_loss.item(), rel=1e-5)
    assert peft_grads.keys() == fused_grads.keys() and len(peft_grads) == 28
    for name, grad in peft_grads.items():
        assert torch.allclose(fused_grads[name], grad, rtol=1e-4, atol=1e-6), name
    assert any(grad.abs().sum() > 0 for grad in fused_grads.values())


def test_fused_forward_is_what_runs_in_the_plain_case(monkeypatch):
    model = tiny_lora_model()
    fuse_lora_forward(model)
    calls = []
    real_addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real_addmm(*a, **k))
    model(input_ids=torch.randint(0, 64, (1, 5)))
    assert len(calls) == 14


@pytest.mark.parametrize("case", ["dropout", "disabled adapters", "float32 adapters on bf16 input"])
def test_every_other_case_runs_pefts_forward(monkeypatch, case):
    model = tiny_lora_model(dropout=0.1 if case == "dropout" else 0.0)
    reference = copy.deepcopy(model)
    fuse_lora_forward(model)
    input_ids = torch.randint(0, 64, (1, 6))
    if case == "float32 adapters on bf16 input":
        model.to(torch.bfloat16)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()
        reference = None
    calls = []
    real_addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real_addmm(*a, **k))
    model.eval()
    if case == "disabled adapters":
        with model.disable_adapter():
            logits = model(input_ids=input_ids).logits
        with reference.disable_adapter():
            assert torch.equal(logits, reference.eval()(input_ids=input_ids).logits)
    else:
        model(input_ids=input_ids)
    assert calls == []


def test_a_copied_or_pickled_model_runs_its_own_weights():
    import pickle

    model = tiny_lora_model()
    fuse_lora_forward(model)
    input_ids = torch.randint(0, 64, (1, 7))
    copy_ = copy.deepcopy(model)
    for name, param in copy_.named_parameters():
        if "lora_B" in name:
            torch.nn.init.zeros_(param)  # the copy's adapters now add nothing
    with torch.no_grad():
        with model.disable_adapter():
            base = model(input_ids=input_ids).logits
        tuned = model(input_ids=input_ids).logits
        assert torch.allclose(copy_(input_ids=input_ids).logits, base, atol=1e-6)
        assert not torch.allclose(tuned, base, atol=1e-3)
        restored = pickle.loads(pickle.dumps(model))
        assert torch.equal(restored(input_ids=input_ids).logits, tuned)
    assert sum(isinstance(m, FusedForward) for m in restored.modules()) == 14


def test_under_autocast_a_float32_model_takes_the_fused_path_once(monkeypatch):
    """bf16 autocast over float32 weights: the base layer's output is bf16, the input float32; the
    fused forward lets addmm cast as PEFT's forward lets its matmuls cast, and runs the base once."""
    peft_model = tiny_lora_model()
    fused_model = copy.deepcopy(peft_model)
    fuse_lora_forward(fused_model)
    base_calls = []
    for module in fused_model.modules():
        if isinstance(module, FusedForward):
            module.base_layer.register_forward_hook(lambda *a: base_calls.append(1))
    input_ids = torch.randint(0, 64, (1, 9))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fused = fused_model(input_ids=input_ids).logits.float()
        reference = peft_model(input_ids=input_ids).logits.float()
    assert len(base_calls) == 14  # once per adapted layer
    assert torch.allclose(fused, reference, atol=0.1, rtol=0.05)  # bf16: the same sums, rounded differently


def test_installing_twice_is_a_no_op_and_a_model_without_lora_gets_none():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny_lora_model()
    assert fuse_lora_forward(model) == 14
    assert fuse_lora_forward(model) == 0
    plain = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    assert fuse_lora_forward(plain) == 0


def test_the_recipe_key_installs_it_on_the_trainers_model(tmp_path, tiny_model_dir, fiqa_jsonl_dir, capsys):
    from peft.tuners.lora import LoraLayer

    from recipekit.training.trainer import build_trainer
    from tests.test_masking import make_recipe

    trainer, _ = build_trainer(make_recipe(tmp_path / "fused", tiny_model_dir, fiqa_jsonl_dir,
                                           "--fused_lora_forward", "true", "--max_steps", "2"))
    layers = [m for m in trainer.model.modules() if isinstance(m, LoraLayer)]
    assert layers and all(isinstance(m, FusedForward) for m in layers)
    trainer.train()
    assert trainer.state.global_step == 2

    plain, _ = build_trainer(make_recipe(tmp_path / "plain", tiny_model_dir, fiqa_jsonl_dir,
                                         "--fused_lora_forward", "true", "--use_peft", "false",
                                         "--learning_rate", "1e-5"))
    assert "found no LoRA-wrapped linear layer" in capsys.readouterr().out
