"""``attn_implementation: torch_varlen``: the packed path hands the kernel the right documents,
heads and causality, and everything else is transformers' sdpa, unchanged.

PyTorch's flash kernel runs on CUDA only; here a stand-in with the kernel's signature computes
attention document by document with sdpa, so the glue around it (layouts, grouped-query heads,
the causal argument of each torch version) is checked on the CPU. The kernel itself was checked
on an H200 (bench/results/fast_path_equivalence_round5_lora_h200_2026-11-30.json)."""

from __future__ import annotations

import pytest
import torch

import recipekit.fast_paths.varlen_attention as varlen
from recipekit.fast_paths.varlen_attention import NAME, register_if_named


def per_document_attention(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, causal: bool, scale=None):
    """What the kernel computes: (tokens, heads, dim) inputs, attention within each document."""
    outputs = []
    bounds = cu_seq_q.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        qd, kd, vd = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, tokens, dim)
        outputs.append(torch.nn.functional.scaled_dot_product_attention(qd, kd, vd, is_causal=causal, scale=scale)
                       .transpose(0, 1))
    return torch.cat(outputs)


def window_size_kernel(calls):
    """torch 2.11's signature: causality as ``window_size``, no grouped-query option."""
    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                    window_size=(-1, -1)):
        calls.append({"window_size": window_size, "heads": (query.shape[1], key.shape[1]), "max_q": max_q})
        return per_document_attention(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                                      causal=tuple(window_size) == (-1, 0), scale=scale)
    return varlen_attn


def is_causal_gqa_kernel(calls):
    """A signature with an ``is_causal`` flag and grouped-query support."""
    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, is_causal=False,
                    enable_gqa=False):
        calls.append({"is_causal": is_causal, "enable_gqa": enable_gqa, "heads": (query.shape[1], key.shape[1])})
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
        return per_document_attention(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal=is_causal,
                                      scale=scale)
    return varlen_attn


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    folder = tmp_path_factory.mktemp("varlen-model")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def load(model_dir, attn_implementation):
    from transformers import LlamaForCausalLM

    register_if_named(attn_implementation)
    return LlamaForCausalLM.from_pretrained(model_dir, attn_implementation=attn_implementation).eval()


def packed_batch():
    """Three documents of 4, 3 and 5 tokens in one row, as TRL's padding-free collator writes them,
    without a KV cache as TRL trains (transformers' sdpa separates packed documents only then)."""
    torch.manual_seed(1)
    cu = torch.tensor([0, 4, 7, 12], dtype=torch.int32)
    return dict(input_ids=torch.randint(0, 100, (1, 12)), position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]]),
                cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=5, max_length_k=5, use_cache=False)


@pytest.mark.parametrize("make_kernel", [window_size_kernel, is_causal_gqa_kernel])
def test_the_kernel_path_gives_what_sdpa_gives_on_packed_documents(model_dir, monkeypatch, make_kernel):
    calls: list[dict] = []
    monkeypatch.setattr(varlen, "varlen_kernel", lambda: make_kernel(calls))
    monkeypatch.setattr(varlen, "KERNEL_DEVICES", frozenset({"cuda", "cpu"}))
    monkeypatch.setattr(varlen, "KERNEL_DTYPES", frozenset({torch.float32}))  # the stand-in computes in any
    batch = packed_batch()
    with torch.no_grad():
        through_kernel = load(model_dir, NAME)(**batch).logits
        sdpa_model = load(model_dir, "sdpa")
        through_sdpa = sdpa_model(**batch).logits  # block-diagonal mask from position_ids
        across_documents = sdpa_model(**{**batch, "use_cache": True}).logits  # a cache: one causal sequence
    assert not torch.allclose(through_sdpa, across_documents, atol=1e-3)  # so the documents' boundaries matter
    assert len(calls) == 2  # one per layer: the kernel ran
    assert torch.allclose(through_kernel, through_sdpa, atol=1e-5)
    if make_kernel is window_size_kernel:
        assert all(c["window_size"] == (-1, 0) and c["heads"] == (4, 4) and c["max_q"] == 5 for c in calls)
    else:
        assert all(c["is_causal"] and c["enable_gqa"] and c["heads"] == (4, 2) for c in calls)


def test_without_document_boundaries_or_on_the_cpu_it_is_sdpa(model_dir, monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(varlen, "varlen_kernel", lambda: window_size_kernel(calls))
    batch = packed_batch()
    varlen_model, sdpa_model = load(model_dir, NAME), load(model_dir, "sdpa")
    with torch.no_grad():
        assert torch.equal(varlen_model(**batch).logits, sdpa_model(**batch).logits)  # CPU: not a kernel device
        monkeypatch.setattr(varlen, "KERNEL_DEVICES", frozenset({"cuda", "cpu"}))
        monkeypatch.setattr(varlen, "KERNEL_DTYPES", frozenset({torch.float32}))
        padded = dict(input_ids=torch.randint(0, 100, (2, 6)), attention_mask=torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]]))
        assert torch.equal(varlen_model(**padded).logits, sdpa_model(**padded).logits)  # two rows, no boundaries
        prompt = batch["input_ids"][:, :4]  # generation: a KV cache and no document boundaries
        assert torch.equal(varlen_model.generate(prompt, max_new_tokens=4, do_sample=False),
                           sdpa_model.generate(prompt, max_new_tokens=4, do_sample=False))  # KV cache
    assert calls == []


def test_other_names_are_left_alone():
    from transformers import AttentionInterface

    register_if_named("sdpa")
    assert "sdpa" in AttentionInterface._global_mapping
    register_if_named(NAME)
    assert AttentionInterface._global_mapping[NAME] is varlen.varlen_attention_forward


def test_a_recipe_naming_it_trains(tmp_path, tiny_model_dir, fiqa_jsonl_dir):
    """The recipe path registers the name before TRL loads the model (on the CPU: sdpa underneath)."""
    from recipekit.training.trainer import build_trainer
    from tests.test_masking import make_recipe

    trainer, _ = build_trainer(make_recipe(tmp_path / "varlen", tiny_model_dir, fiqa_jsonl_dir,
                                           "--attn_implementation", NAME, "--packing", "true", "--max_steps", "2"))
    assert trainer.model.config._attn_implementation == NAME
    trainer.train()
    assert trainer.state.global_step == 2


def test_a_torch_without_the_kernel_is_named(monkeypatch, capsys):
    monkeypatch.setattr(varlen, "varlen_kernel", lambda: None)
    register_if_named(NAME)
    out = capsys.readouterr().out
    assert "needs torch.nn.attention.varlen (PyTorch 2.10 or later)" in out and "flex_attention" in out
    register_if_named("sdpa")
    assert capsys.readouterr().out == ""


def test_a_gpu_older_than_ampere_is_named_and_gets_sdpa(monkeypatch, capsys):
    monkeypatch.setattr(varlen, "varlen_kernel", lambda: window_size_kernel([]))
    monkeypatch.setattr(varlen, "kernel_runs_on", lambda index: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    register_if_named(NAME)
    assert "this Tesla T4 is older, so attention runs transformers' sdpa" in capsys.readouterr().out
    from types import SimpleNamespace

    kwargs = {"cu_seq_lens_q": torch.tensor([0, 3]), "cu_seq_lens_k": torch.tensor([0, 3])}
    on_gpu = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.bfloat16, shape=(1, 4, 3, 8))  # what the check reads
    assert not varlen.takes_the_kernel(object(), on_gpu, on_gpu, 0.0, kwargs)
    monkeypatch.setattr(varlen, "kernel_runs_on", lambda index: True)
    assert varlen.takes_the_kernel(object(), on_gpu, on_gpu, 0.0, kwargs)  # the same call on a newer GPU


def test_the_kernel_takes_only_flash_dtypes_and_the_calls_causality(monkeypatch):
    from types import SimpleNamespace

    calls: list[dict] = []
    monkeypatch.setattr(varlen, "varlen_kernel", lambda: window_size_kernel(calls))
    monkeypatch.setattr(varlen, "KERNEL_DEVICES", frozenset({"cpu"}))
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": 3, "max_length_k": 3}
    module = SimpleNamespace(is_causal=True)
    query = torch.randn(1, 2, 5, 8)
    assert not varlen.takes_the_kernel(module, query, query, 0.0, kwargs)  # float32: not a flash dtype
    half = query.to(torch.bfloat16)
    assert varlen.takes_the_kernel(module, half, half, 0.0, kwargs)
    varlen.varlen_attention_forward(module, half, half, half, None, **kwargs, is_causal=False)
    varlen.varlen_attention_forward(module, half, half, half, None, **kwargs)
    assert [c["window_size"] for c in calls] == [(-1, -1), (-1, 0)]  # the call's flag wins, else the module's
