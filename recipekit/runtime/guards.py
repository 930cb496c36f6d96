"""Callbacks that protect a long GPU job: preemption and a non-finite loss.

- A stop signal (``recipekit.runtime.signals``: SIGTERM, SIGINT, SIGHUP, SIGUSR1) asks the
  trainer to save a checkpoint at the end of the current step and stop; the run then exits
  cleanly and the same command with ``resume_from_checkpoint: auto`` continues from there. The
  callback lives here, apart from the signal handling, because it needs transformers, and the
  signals must be taken over before anything heavy is imported.
- A NaN or infinite training loss stops training before any checkpoint of the broken
  weights is written, so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

from recipekit.runtime.signals import STOP, any_process_signal


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


class PreemptionCallback(TrainerCallback):
    """On SIGTERM or SIGINT (to any process): checkpoint at the end of the current optimizer
    step, then stop. The signal itself only sets ``recipekit.runtime.signals.STOP``."""

    def __init__(self) -> None:
        self.stopped_at_step: int | None = None
        self.signum: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        STOP.install()  # already done by recipes.run.train; a trainer used on its own gets it here
        STOP.training_started()

    def on_step_end(self, args, state, control, **kwargs):
        signum = any_process_signal(STOP.signum)
        if signum is not None:
            STOP.finishing()
            control.should_save = True
            control.should_evaluate = False  # the checkpoint, not an evaluation, is what the grace period is for
            control.should_training_stop = True
            self.stopped_at_step, self.signum = state.global_step, signum

    def on_train_end(self, args, state, control, **kwargs):
        STOP.finishing()  # what follows (the final evaluation, the save) checks STOP itself
