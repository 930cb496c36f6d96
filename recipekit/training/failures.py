"""How a training run ends when it does not finish: each failure or stop becomes the one
exception a command reports (``RecipeError`` or ``RunStopped`` with its exit status), with the
run manifest saying how the run ended.

``recipekit.training.trainer`` holds the normal path and calls these at its three exits:
before training (:func:`failure_before_training`), during it (:func:`failure_during_training`)
and after ``trainer.train`` returned early (:func:`stop_if_guarded`, :func:`stopped_after_last_step`).
"""

from __future__ import annotations

from transformers import ProgressCallback

from recipekit.config.recipe import Recipe
from recipekit.errors import ExitCode, RecipeError, RunStopped
from recipekit.rundir.checkpoints import newest_complete_checkpoint
from recipekit.rundir.manifest import RunManifest
from recipekit.runtime.guards import NonFiniteLossGuard, PreemptionCallback
from recipekit.runtime.io_faults import io_fault, io_fault_message
from recipekit.runtime.out_of_memory import (
    EvaluationPhase,
    is_out_of_memory,
    out_of_memory_message,
)
from recipekit.runtime.signals import (
    exit_code_for,
    signal_name,
    status_for,
)


def failure_before_training(error: BaseException, recipe: Recipe) -> Exception | None:
    """A full GPU or a failed write while the model loaded: the exception to raise, or None for a bug."""
    if is_out_of_memory(error):
        return RecipeError(out_of_memory_message(error, recipe.training, recipe.model,
                                                 "while loading the model and preparing training", None))
    if io_fault(error) is not None:
        return RunStopped(io_fault_message(error, recipe.training.output_dir, "before training began", None),
                          exit_code=ExitCode.WRITE_FAULT)
    return None


def failure_during_training(trainer, recipe: Recipe, manifest: RunManifest, error: BaseException) -> Exception | None:
    """A full GPU or a failed write while training or evaluating, recorded in the manifest when the
    disk still takes that small write: the exception to raise, or None for a bug."""
    if not is_out_of_memory(error) and io_fault(error) is None:
        return None
    close_progress_bars(trainer)
    done = trainer.state.global_step
    output_dir = recipe.training.output_dir
    if is_out_of_memory(error):
        evaluating = _callback(trainer, EvaluationPhase).active
        where = f"in the evaluation after step {done}" if evaluating else f"at step {done + 1}"
        if trainer.is_world_process_zero():
            manifest.finish("failed: out of GPU memory", stopped_at_step=done)
        return RecipeError(out_of_memory_message(error, recipe.training, recipe.model, where,
                                                 newest_complete_checkpoint(output_dir)))
    what, filename = io_fault(error)
    if trainer.is_world_process_zero():
        try:
            manifest.finish(f"failed: {what}", stopped_at_step=done, file=filename)
        except OSError:
            pass  # the message still says it; the manifest keeps its last whole version
    return RunStopped(io_fault_message(error, output_dir, f"at step {done}", newest_complete_checkpoint(output_dir)),
                      exit_code=ExitCode.WRITE_FAULT)


def _callback(trainer, kind):
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, kind))


def stop_if_guarded(trainer, manifest: RunManifest) -> None:
    """After ``trainer.train`` returned: raise ``RunStopped`` if a guard stopped it (a non-finite
    loss: nothing saved after the last good checkpoint; a signal: a checkpoint saved at the stop)."""
    output_dir = trainer.args.output_dir
    nan_guard, preemption = _callback(trainer, NonFiniteLossGuard), _callback(trainer, PreemptionCallback)
    if nan_guard.tripped_at_step is not None:
        last_good = newest_complete_checkpoint(output_dir)
        if trainer.is_world_process_zero():
            manifest.finish("stopped: non-finite loss", stopped_at_step=nan_guard.tripped_at_step)
        raise RunStopped(
            f"the training loss became NaN or infinite at step {nan_guard.tripped_at_step}, so training stopped "
            f"and saved nothing after it. The last good checkpoint is {last_good or '(none yet)'}. Lower "
            "`learning_rate`, keep `max_grad_norm` at 1.0, check the data, then rerun (with "
            "`resume_from_checkpoint: auto` it continues from that checkpoint).",
            exit_code=ExitCode.NON_FINITE_LOSS,
        )
    if preemption.stopped_at_step is not None:
        checkpoint = newest_complete_checkpoint(output_dir)
        if trainer.is_world_process_zero():
            manifest.finish(status_for(preemption.signum), stopped_at_step=preemption.stopped_at_step,
                            signal=signal_name(preemption.signum))
        raise RunStopped(
            f"{signal_name(preemption.signum)} received: stopped at step {preemption.stopped_at_step} and saved "
            f"{checkpoint}. Rerun the same command with `resume_from_checkpoint: auto` to continue.",
            exit_code=exit_code_for(preemption.signum),
        )


def stopped_after_last_step(trainer, manifest: RunManifest, metrics: dict, signum: int) -> RunStopped:
    """A signal after the last training step, once the adapter is saved: the final evaluation is skipped."""
    if trainer.is_world_process_zero():
        manifest.finish(status_for(signum), metrics=metrics, signal=signal_name(signum),
                        note="training finished; the final evaluation was skipped")
    return RunStopped(
        f"{signal_name(signum)} received after the last training step: the adapter is saved in "
        f"{trainer.args.output_dir}; the final evaluation was skipped (`python -m recipes.evaluate` runs it).",
        exit_code=exit_code_for(signum),
    )


def close_progress_bars(trainer) -> None:
    """End the Trainer's progress bars' lines, so a message printed after a failure starts on its own
    line instead of after a half-drawn bar (the Trainer closes them only when training ends normally)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback):
            for bar in (callback.training_bar, callback.prediction_bar):
                if bar is not None:
                    bar.close()
