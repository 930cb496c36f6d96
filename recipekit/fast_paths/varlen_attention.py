"""``attn_implementation: torch_varlen``: flash attention over packed documents with PyTorch's own kernel.

Packed, padding-free batches need attention that stays inside each document. transformers does
that with ``flash_attention_2`` (the flash-attn package, built for one CUDA and torch pair, or a
kernel fetched from the Hub) or with ``flex_attention`` (a block mask over 128-token tiles: FiQA
documents of ~280 tokens leave most tiles half used, and the block mask is rebuilt every step).
PyTorch ships the flash kernel itself as ``torch.nn.attention.varlen.varlen_attn``, which takes
the same cumulative document lengths (``cu_seq_lens_q`` / ``cu_seq_lens_k``) TRL's padding-free
collator already puts in every batch. This module registers it under transformers' attention
interface; nothing is installed. transformers still builds its sdpa mask for each forward (the
fallback below needs it); the kernel does not read it.

Only packed training and evaluation batches (one row with document boundaries) in fp16 or bf16
on an Ampere or newer CUDA GPU take the kernel. Every other call (padded batches, generation with
a KV cache, a CPU run) goes to transformers' own ``sdpa`` attention, whose masks are what
transformers builds for this name.
"""

from __future__ import annotations

import inspect
from functools import cache

import torch

NAME = "torch_varlen"
KERNEL_DEVICES = frozenset({"cuda"})  # where PyTorch builds the flash kernel
KERNEL_DTYPES = frozenset({torch.float16, torch.bfloat16})  # what it computes in


@cache
def varlen_kernel():
    """PyTorch's varlen flash attention, or None where this torch has none (before 2.10)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@cache
def kernel_runs_on(device_index: int) -> bool:
    """PyTorch's flash kernel needs an Ampere GPU or newer (compute capability 8.0)."""
    return torch.cuda.get_device_capability(device_index) >= (8, 0)


@cache
def kernel_parameters(kernel) -> frozenset[str]:
    return frozenset(inspect.signature(kernel).parameters)


def causal_kwargs(kernel, causal: bool) -> dict:
    """Causality as this torch's ``varlen_attn`` spells it: ``window_size`` (-1, 0) in torch 2.11,
    an ``is_causal`` flag where a version has one."""
    if "is_causal" in kernel_parameters(kernel):
        return {"is_causal": causal}
    return {"window_size": (-1, 0) if causal else (-1, -1)}


def takes_the_kernel(module, query: torch.Tensor, key: torch.Tensor, dropout: float, kwargs: dict) -> bool:
    return (
        varlen_kernel() is not None
        and query.device.type in KERNEL_DEVICES
        and (query.device.type != "cuda" or kernel_runs_on(query.device.index or 0))
        and query.dtype in KERNEL_DTYPES
        and query.shape[-1] <= 256                           # and head sizes
        and query.shape[0] == 1                              # one packed row
        and query.shape[2] == key.shape[2]                   # no KV cache: queries and keys are the same tokens
        and kwargs.get("cu_seq_lens_q") is not None and kwargs.get("cu_seq_lens_k") is not None
        and not dropout
        and getattr(module, "sliding_window", None) is None and kwargs.get("sliding_window") is None
    )


def varlen_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """transformers' attention signature: ``query`` (1, heads, tokens, dim), keys and values with
    the model's key-value heads; returns (1, tokens, heads, dim) and no weights."""
    if not takes_the_kernel(module, query, key, dropout, kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kernel = varlen_kernel()
    q, k, v = (tensor.transpose(1, 2).squeeze(0) for tensor in (query, key, value))  # (tokens, heads, dim)
    is_causal = kwargs.get("is_causal")  # as transformers' sdpa reads it: the call's, else the module's
    extra = causal_kwargs(kernel, getattr(module, "is_causal", True) if is_causal is None else bool(is_causal))
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        if "enable_gqa" in kernel_parameters(kernel):
            extra["enable_gqa"] = True
        else:  # torch 2.11: one key-value head per query head (on the 8B shape, +3 GiB of saved activations)
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    output = kernel(q, k, v, kwargs["cu_seq_lens_q"], kwargs["cu_seq_lens_k"],
                    int(kwargs["max_length_q"]), int(kwargs["max_length_k"]), scale=scaling, **extra)
    return output.unsqueeze(0), None


def register_if_named(attn_implementation: str | None) -> None:
    """Register ``torch_varlen`` with transformers before a model that names it is loaded; a note
    when this torch has no varlen kernel, as every call then runs sdpa (correct, and slower on
    packed batches, where sdpa is handed a mask over the whole pack)."""
    if attn_implementation != NAME:
        return
    if varlen_kernel() is None:
        print(f"note: attn_implementation {NAME} needs torch.nn.attention.varlen (PyTorch 2.10 or later); this torch "
              f"{torch.__version__} has none, so attention runs transformers' sdpa. Upgrade torch, or use "
              "attn_implementation: flex_attention for packed batches.")
    elif torch.cuda.is_available() and not kernel_runs_on(torch.cuda.current_device()):
        print(f"note: attn_implementation {NAME} runs PyTorch's flash kernel on Ampere or newer GPUs; this "
              f"{torch.cuda.get_device_name()} is older, so attention runs transformers' sdpa. Use "
              "attn_implementation: flex_attention or sdpa on this card.")
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, varlen_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
