"""One matrix multiply for a LoRA adapter's output and its addition to the frozen layer's output.

PEFT computes ``result + lora_B(lora_A(x)) * scaling``: the adapter's full-size output is written,
read back to be scaled, and read again to be added, and for a 4-bit base PEFT first clones the base
output as a precaution. Per adapted layer and step that is three passes (four on a 4-bit base) over
a tensor the size of the layer's output, plus the scaling once more in the backward pass; on the 8B
QLoRA recipe those element-wise kernels and copies took about 70 of 585 ms
(bench/results/step_profile_h200_2026-11-30.json). ``torch.addmm(result, lora_A(x), B.T,
alpha=scaling)`` adds the scaled product in the matrix multiply's epilogue, and autograd scales only
the rank-r gradient on the way back. Same arithmetic, fewer memory passes.

It applies to the plain case only, checked on every call: one active adapter, no dropout, no DoRA
or other variant, no LoRA bias, not merged, no per-call adapter names, adapter weights in the
input's dtype. Anything else (adapters disabled to compare with the base, float32 adapters under
FSDP, a mixed-adapter batch) runs PEFT's own forward, so turning this on never changes what is
computed, only how.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def fusable_layer_types() -> tuple[type, ...]:
    """PEFT's LoRA wrappers of a plain linear layer and of a bitsandbytes 4-bit one."""
    from peft.tuners.lora import Linear

    types: list[type] = [Linear]
    try:
        from peft.tuners.lora.bnb import Linear4bit
    except ImportError:  # bitsandbytes not installed: no 4-bit layers to meet
        pass
    else:
        types.append(Linear4bit)
    return tuple(types)


def plain_adapter(layer, x: torch.Tensor) -> str | None:
    """The single adapter to fuse for this call, or None when PEFT's forward must run."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    adapter = layer.active_adapters[0]
    if adapter not in layer.lora_A or adapter in getattr(layer, "lora_variant", {}):
        return None
    lora_A, lora_B = layer.lora_A[adapter], layer.lora_B[adapter]
    if not isinstance(layer.lora_dropout[adapter], nn.Identity) or lora_B.bias is not None:
        return None
    if not (x.dtype == lora_A.weight.dtype == lora_B.weight.dtype):
        return None
    return adapter


def fused_forward(layer, peft_forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = None if (args or kwargs) else plain_adapter(layer, x)
        if adapter is None:
            return peft_forward(x, *args, **kwargs)
        result = layer.base_layer(x)
        if result.dtype != x.dtype:  # a base layer that returns another dtype: PEFT casts, so let it
            return peft_forward(x)
        hidden = layer.lora_A[adapter](x)
        out_features = result.shape[-1]
        fused = torch.addmm(result.reshape(-1, out_features), hidden.reshape(-1, hidden.shape[-1]),
                            layer.lora_B[adapter].weight.t(), alpha=layer.scaling[adapter])
        return fused.view(result.shape)

    forward.fused_lora = True  # marks an installed forward, so installing twice is a no-op
    return forward


def fuse_lora_forward(model: nn.Module) -> int:
    """Give every LoRA-wrapped linear layer of ``model`` the fused forward; returns how many."""
    layer_types = fusable_layer_types()
    installed = 0
    for module in model.modules():
        if isinstance(module, layer_types) and not getattr(module.forward, "fused_lora", False):
            module.forward = fused_forward(module, module.forward)
            installed += 1
    return installed
