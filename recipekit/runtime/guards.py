"""A callback that protects a long GPU job from a non-finite loss: a NaN or infinite training
loss stops training before any checkpoint of the broken weights is written, so the newest
checkpoint is the last good one. (Preemption's callback is with the rest of the signal handling,
in ``recipekit.runtime.signals``.)
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

from recipekit.runtime.signals import any_process_signal


def any_process(flag: bool) -> bool:
    """True on every process if it is true on one."""
    return any_process_signal(1 if flag else None) is not None


class NonFiniteLossGuard(TrainerCallback):
    """Stop once the training loss or gradient norm turns NaN or infinite, saving nothing after it.

    It reads what the trainer logs (``loss``, ``grad_norm``), so it costs nothing between logs;
    a NaN loss makes the gradient norm NaN too, so it is caught even when
    ``logging_nan_inf_filter`` hides the loss itself. A checkpoint due between two logs is
    checked first: the trainable weights, which a NaN update leaves non-finite, are tested
    once per checkpoint, never per step.
    """

    def __init__(self) -> None:
        self.tripped_at_step: int | None = None

    def _trip(self, state, control) -> None:
        self.tripped_at_step = state.global_step
        control.should_save = False
        control.should_evaluate = False
        control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = [logs.get(key) for key in ("loss", "grad_norm")] if logs else []
        if any(isinstance(v, (int, float)) and not math.isfinite(v) for v in values):
            self._trip(state, control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not control.should_save or model is None or self.tripped_at_step is not None:
            return
        import torch

        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad)
        if any_process(not finite):
            self._trip(state, control)
