"""Callbacks that protect a long GPU job: preemption (SIGTERM) and a non-finite loss.

- SIGTERM, as schedulers send before preempting, asks the trainer to save a checkpoint
  at the end of the current step and stop; the run then exits cleanly (status 143) and
  the same command with ``resume_from_checkpoint: auto`` continues from there.
- A NaN or infinite training loss stops training before any checkpoint of the broken
  weights is written, so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import math
import signal

from transformers import TrainerCallback

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


def any_process(flag: bool) -> bool:
    """True on every process if it is true on one: all ranks must stop at the same step,
    or the others would wait forever in the next collective."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    from accelerate import PartialState

    value = torch.tensor([1 if flag else 0], device=PartialState().device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class PreemptionCallback(TrainerCallback):
    """On SIGTERM (to any process): checkpoint at the end of the current optimizer step, then stop."""

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at_step: int | None = None

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. a notebook worker): leave the default
            pass

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.requested):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at_step = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        if self.stopped_at_step is not None:
            # Stopping already: a second SIGTERM (torchrun sends one to the ranks still running
            # once another rank has exited) must not kill this process while it writes its status.
            return
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except ValueError:
            pass


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
