"""One autograd node for an attention layer's three LoRA-adapted projections, q, k and v.

The attention layer hands the same normed hidden states to ``q_proj``, ``k_proj`` and ``v_proj``.
With LoRA on all three (and no dropout), autograd sees six consumers of that tensor: the three
frozen projections and the three ``lora_A`` matrices. On the way back it writes six full-size
input gradients and adds them up with five element-wise kernels; on the 8B LoRA recipe those
additions were most of the 314 add kernels of a step (bench/results/step_profile_round6_h200_2026-11-30.json).

Here ``q_proj`` computes all three outputs in one ``torch.autograd.Function`` and hands ``k_proj``
and ``v_proj`` theirs when they are called with the same tensor. Forward: one matrix multiply for
the three ``lora_A`` (concatenated, rank 3r), then each projection's frozen product with its
adapter's scaled output added in the epilogue (``torch.addmm``), as ``recipekit.fast_paths.fused_lora`` does
per layer. Backward: the input gradient starts as the adapters' rank-3r product and takes each
frozen projection's product in place (``Tensor.addmm_``, which accumulates in the multiply's
epilogue): one full-size gradient instead of six, and no separate additions. The adapter
gradients are the same products PEFT's graph computes.

It applies only where every part is plain, checked on every call: the three layers take the fused
LoRA forward's plain case (one adapter, no dropout, DoRA or bias; ``recipekit.fast_paths.fused_lora.plain_adapter``),
their frozen layers are ``torch.nn.Linear`` in the input's dtype with nothing trainable, and
autocast, if on, computes in that dtype too. A 4-bit base, float32 adapters on a bf16 model, a
trained base bias, or a call that does not follow the q, k, v order with one tensor runs each
layer's own forward. Outputs are handed over only inside one call of the attention module (hooks
on it open and close the group), so a projection called on its own computes its own output and
nothing can change between the q call and the k and v calls. Results agree with PEFT's to rounding.

The node reads the frozen and adapter weights directly, so forward hooks on the inner modules
(``base_layer``, ``lora_A``, ``lora_B``) do not run; hooks on the projections themselves do.
Sharding schemes that gather weights through such hooks (FSDP, DeepSpeed ZeRO-3) are therefore
refused by ``recipekit.training.trainer``, which then leaves each layer its own forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from recipekit.fast_paths.fused_lora import plain_adapter

PROJECTIONS = ("q_proj", "k_proj", "v_proj")


class LoraQKV(torch.autograd.Function):
    """``(x, scalings, Wq, Wk, Wv, bq, bk, bv, Aq, Ak, Av, Bq, Bk, Bv) -> (q, k, v)``, each
    ``x @ W.T + b + scaling * (x @ A.T) @ B.T`` over the flattened tokens (2-D: the caller views
    them, so the outputs stay ordinary tensors that later code may modify in place); gradients for
    ``x`` and the six adapter matrices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scalings: tuple[float, float, float], *weights: torch.Tensor | None):
        bases, biases, lora_As, lora_Bs = weights[0:3], weights[3:6], weights[6:9], weights[9:12]
        x2d = x.reshape(-1, x.shape[-1])
        lora_A = torch.cat(lora_As)                  # (rq + rk + rv, in): one multiply for the three adapters
        hidden = x2d @ lora_A.t()
        ranks = [a.shape[0] for a in lora_As]
        outputs = []
        for base, bias, part, lora_B, scaling in zip(bases, biases, hidden.split(ranks, dim=1), lora_Bs, scalings):
            frozen = F.linear(x2d, base, bias)
            outputs.append(torch.addmm(frozen, part, lora_B.t(), alpha=scaling))  # 2-D: the caller views them
        ctx.save_for_backward(x, hidden, lora_A, *bases, *lora_Bs)
        ctx.scalings, ctx.ranks = scalings, ranks
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):
        x, hidden, lora_A, *rest = ctx.saved_tensors
        bases, lora_Bs = rest[0:3], rest[3:6]
        x2d = x.reshape(-1, x.shape[-1])
        grads = list(grad_outputs)
        # The gradient reaching each adapter's rank-r hidden state, already scaled: (dy @ B) * scaling.
        grad_hidden = torch.cat([(g @ lora_B).mul_(scaling)
                                 for g, lora_B, scaling in zip(grads, lora_Bs, ctx.scalings)], dim=1)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_hidden @ lora_A
            for g, base in zip(grads, bases):
                grad_x.addmm_(g, base)               # accumulated in the multiply, no separate addition
            grad_x = grad_x.view(x.shape)
        grad_As = (grad_hidden.t() @ x2d).split(ctx.ranks, dim=0)
        grad_Bs = [(g.t() @ part).mul_(scaling)
                   for g, part, scaling in zip(grads, hidden.split(ctx.ranks, dim=1), ctx.scalings)]
        return (grad_x, None, None, None, None, None, None, None, *grad_As, *grad_Bs)


class QKVGroup:
    """The q, k and v projections of one attention layer: inside a call of the attention module,
    ``q_proj``'s call computes all three and keeps ``k_proj``'s and ``v_proj``'s outputs until
    they are called with the same input."""

    def __init__(self, layers: tuple[nn.Module, nn.Module, nn.Module]) -> None:
        self.layers = layers
        self.open = False  # inside a call of the attention module
        self.pending_input: torch.Tensor | None = None
        self.pending: dict[int, torch.Tensor] = {}

    def reset(self, open_: bool) -> None:
        self.open, self.pending_input, self.pending = open_, None, {}

    def adapters(self, x: torch.Tensor) -> list[str] | None:
        """Each layer's single plain adapter, or None when any layer must run its own forward."""
        adapters = []
        for layer in self.layers:
            adapter = plain_adapter(layer, x)
            base = layer.base_layer
            if adapter is None or type(base) is not nn.Linear or base.weight.dtype != x.dtype:
                return None
            if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
                return None  # a trained base (PEFT's bias="all"): this node gives the base no gradient
            adapters.append(adapter)
        if torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type) != x.dtype:
            return None
        return adapters

    def output(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """``layer``'s output from the group, or None to run the layer's own forward."""
        if not self.open:
            return None
        position = self.layers.index(layer)
        if position > 0:
            if self.pending_input is not x or position not in self.pending:
                return None
            return self.pending.pop(position)
        self.reset(open_=True)
        adapters = self.adapters(x)
        if adapters is None:
            return None
        layers = self.layers
        weights = [*(m.base_layer.weight for m in layers), *(m.base_layer.bias for m in layers),
                   *(m.lora_A[a].weight for m, a in zip(layers, adapters)),
                   *(m.lora_B[a].weight for m, a in zip(layers, adapters))]
        scalings = tuple(float(m.scaling[a]) for m, a in zip(layers, adapters))
        shape = (*x.shape[:-1], -1)
        q, k, v = (out.view(shape) for out in LoraQKV.apply(x, scalings, *weights))
        self.pending_input, self.pending = x, {1: k, 2: v}
        return q

    def __getstate__(self) -> dict[str, Any]:
        return {"layers": self.layers, "open": False, "pending_input": None, "pending": {}}  # nothing in flight


def open_group(attention: nn.Module, *args: Any) -> None:
    """Forward pre-hook of the attention module (module-level, so copies and pickles find their own group)."""
    group = getattr(getattr(attention, "q_proj", None), "qkv_group", None)
    if group is not None:
        group.reset(open_=True)


def close_group(attention: nn.Module, *args: Any) -> None:
    """Forward hook of the attention module, run even when its forward raises."""
    group = getattr(getattr(attention, "q_proj", None), "qkv_group", None)
    if group is not None:
        group.reset(open_=False)


def group_qkv_projections(model: nn.Module, fused_types: tuple[type, ...]) -> int:
    """Group the q, k and v projections of every attention layer whose three are fused LoRA layers
    (``fused_types``); returns how many groups were made (0 when already grouped)."""
    groups = 0
    for module in model.modules():
        layers = tuple(getattr(module, name, None) for name in PROJECTIONS)
        if not all(isinstance(layer, fused_types) for layer in layers):
            continue
        if all(getattr(layer, "qkv_group", None) is not None for layer in layers):
            continue
        group = QKVGroup(layers)
        for layer in layers:
            layer.qkv_group = group
        module.register_forward_pre_hook(open_group)
        module.register_forward_hook(close_group, always_call=True)
        groups += 1
    return groups
