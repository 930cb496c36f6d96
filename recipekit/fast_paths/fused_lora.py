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
or other variant, no LoRA bias, not merged, no per-call arguments (adapter names), adapter weights
in the input's dtype. Anything else (adapters disabled to compare with the base, float32 adapters
on a bf16 model, a mixed-adapter batch) runs PEFT's own forward. The sums are the same; in bf16
they are rounded once instead of after each step, so results agree to rounding, not bit for bit.

The layers change class (``FusedLinear`` / ``FusedLinear4bit``, subclasses of PEFT's), rather
than carrying a replaced ``forward``: a copied, pickled or saved model keeps working, and each
copy runs its own weights.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear
from torch import nn


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


class FusedForward:
    """Mixed in before a PEFT LoRA layer class: the fused forward, PEFT's (``super()``) otherwise."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        group = getattr(self, "qkv_group", None)  # fused_lora_qkv: q_proj's call computes k and v too
        if group is not None and not (args or kwargs):
            grouped = group.output(self, x)
            if grouped is not None:
                return grouped
        adapter = None if (args or kwargs) else plain_adapter(self, x)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)
        if result.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            # A base layer that returns another dtype outside autocast (none of transformers' or
            # bitsandbytes' do): PEFT's forward casts, so let it, at the price of a second base pass.
            return super().forward(x)
        hidden = self.lora_A[adapter](x)  # under autocast, addmm casts all three operands alike
        out_features = result.shape[-1]
        fused = torch.addmm(result.reshape(-1, out_features), hidden.reshape(-1, hidden.shape[-1]),
                            self.lora_B[adapter].weight.t(), alpha=self.scaling[adapter])
        return fused.view(result.shape)


class FusedLinear(FusedForward, Linear):
    """PEFT's ``lora.Linear`` with the fused forward."""


FUSED_CLASSES: dict[type, type] = {Linear: FusedLinear}

try:
    from peft.tuners.lora.bnb import Linear4bit
except ImportError:  # bitsandbytes not installed: no 4-bit layers to meet
    pass
else:
    class FusedLinear4bit(FusedForward, Linear4bit):
        """PEFT's ``lora.Linear4bit`` (a bitsandbytes 4-bit base) with the fused forward."""

    FUSED_CLASSES[Linear4bit] = FusedLinear4bit


def fuse_lora_forward(model: nn.Module) -> int:
    """Give every LoRA-wrapped plain or 4-bit linear layer of ``model`` the fused forward; returns
    how many layers changed (0 when they already have it)."""
    changed = 0
    for module in model.modules():
        fused_class = FUSED_CLASSES.get(type(module))
        if fused_class is not None:
            module.__class__ = fused_class
            changed += 1
    return changed
