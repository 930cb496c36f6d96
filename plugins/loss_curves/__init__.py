"""Loss-curve export: every log entry streamed to metrics.jsonl / metrics.csv, and charts.

Add it to a recipe::

    plugins:
      - plugins.loss_curves.LossCurves
    loss_curves_smoothing: 0.9     # EMA weight of the smoothed training-loss line

Files land in the run's ``output_dir``: ``metrics.jsonl`` and ``metrics.csv`` (rewritten at
every log), ``loss.png``, ``learning_rate.png``, ``grad_norm.png`` (and ``throughput.png``
with the throughput plugin), redrawn at every evaluation and at the end. Re-plot or
compare finished runs with ``python -m plugins.loss_curves RUN_DIR [RUN_DIR ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainerCallback

from plugins.base import RecipePlugin
from plugins.loss_curves.metrics_log import MetricsLog, row_kind
from plugins.loss_curves.plotting import render_run_charts
from recipekit.errors import RecipeError


@dataclass
class LossCurvesConfig:
    loss_curves_smoothing: float = field(
        default=0.9, metadata={"help": "EMA weight of the smoothed training-loss line, in [0, 1)."}
    )


class LossCurvesCallback(TrainerCallback):
    """Writes rows and charts on the main process only."""

    def __init__(self, output_dir: str, title: str, smoothing: float) -> None:
        self.log = MetricsLog(output_dir)
        self.title = title
        self.smoothing = smoothing
        self.training_ended = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.log.start(resumed_step=state.global_step, log_history=state.log_history)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        kind = row_kind(logs, self.training_ended)
        self.log.append({"step": state.global_step, "epoch": state.epoch, "kind": kind, **logs})

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not self.training_ended:
            self.render()

    def on_train_end(self, args, state, control, **kwargs):
        self.training_ended = True
        if state.is_world_process_zero:
            self.render()

    def render(self) -> None:
        render_run_charts(self.log.rows, self.log.run_dir, self.title, self.smoothing)


class LossCurves(RecipePlugin):
    """Exports the loss curve as data files and PNG charts while training runs."""

    config_class = LossCurvesConfig
    order = 10  # after plugins that add metrics to the logs

    def on_recipe_parsed(self, recipe) -> None:
        smoothing = self.config.loss_curves_smoothing
        if not 0 <= smoothing < 1:
            raise RecipeError(f"`loss_curves_smoothing` must be in [0, 1), got {smoothing}. 0.9 is a good default.")

    def callbacks(self, recipe) -> list[TrainerCallback]:
        return [LossCurvesCallback(recipe.training.output_dir, recipe.name, self.config.loss_curves_smoothing)]

    def on_train_end(self, trainer, recipe, metrics) -> None:
        # The final evaluation of the best model is logged after training ends: draw it too.
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, LossCurvesCallback) and trainer.is_world_process_zero():
                callback.render()
