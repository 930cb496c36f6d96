"""Throughput: non-padding tokens per second, step time and peak GPU memory in the logs.

Add ``plugins.throughput.Throughput`` to a recipe's ``plugins``, with
``include_num_input_tokens_seen: non_padding`` (the trainer's token count). Each training log entry
then carries ``tokens_per_second`` (non-padding tokens of all processes over the time spent in optimizer
steps since the previous log, batch loading included, evaluation and checkpoint pauses not),
``step_time_seconds`` and, on a GPU, ``peak_memory_gib`` / ``peak_reserved_gib``. They
reach ``trainer_state.json`` and, with the loss-curves plugin, the CSV and a chart.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from plugins.base import RecipePlugin
from recipes.errors import RecipeError


def _cuda():
    import torch

    return torch.cuda if torch.cuda.is_available() else None


class ThroughputCallback(TrainerCallback):
    """Times each optimizer step from the end of the one before, so fetching and collating its batch
    counts: the trainer loads the next batch before ``on_step_begin``, and a clock started there
    would leave that time out. Logging, evaluation and checkpoint saving are pauses: each of their
    hooks restarts the clock, so the next step is timed from the end of the last pause."""

    def __init__(self) -> None:
        self.clock_started = 0.0
        self.train_seconds = 0.0  # time in optimizer steps since the last log
        self.steps = 0
        self.tokens_at_last_log: int | None = None

    @staticmethod
    def _now() -> float:
        cuda = _cuda()
        if cuda is not None:
            cuda.synchronize()  # kernels are asynchronous: time the work, not its launch
        return time.perf_counter()

    def _restart_clock(self) -> None:
        self.clock_started = self._now()

    def on_train_begin(self, args, state, control, **kwargs):
        self.tokens_at_last_log = state.num_input_tokens_seen
        self.train_seconds, self.steps = 0.0, 0
        self._restart_clock()

    def on_step_end(self, args, state, control, **kwargs):
        now = self._now()
        self.train_seconds += now - self.clock_started
        self.steps += 1
        self.clock_started = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_save(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_log(self, args, state, control, logs=None, **kwargs):
        try:
            self._report(state, logs)
        finally:
            self._restart_clock()

    def _report(self, state, logs: dict | None) -> None:
        if logs is None or "loss" not in logs or self.steps == 0 or self.train_seconds <= 0:
            return
        tokens = state.num_input_tokens_seen - (self.tokens_at_last_log or 0)
        measured = {
            "tokens_per_second": round(tokens / self.train_seconds, 2),
            "step_time_seconds": round(self.train_seconds / self.steps, 4),
        }
        cuda = _cuda()
        if cuda is not None:
            measured["peak_memory_gib"] = round(cuda.max_memory_allocated() / 2**30, 3)
            measured["peak_reserved_gib"] = round(cuda.max_memory_reserved() / 2**30, 3)
        logs.update(measured)  # seen by the callbacks after this one (loss curves)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(measured)  # and kept in trainer_state.json
        self.tokens_at_last_log = state.num_input_tokens_seen
        self.train_seconds, self.steps = 0.0, 0


class RestartClockAfterPauses(TrainerCallback):
    """The throughput callback runs early at each log, so the callbacks after it (metrics files,
    charts, the progress bar) would fall into the next step's time. This one is added after all
    of them and restarts the clock once they are done."""

    def __init__(self, timer: ThroughputCallback) -> None:
        self.timer = timer

    def on_log(self, args, state, control, **kwargs):
        self.timer._restart_clock()

    def on_evaluate(self, args, state, control, **kwargs):
        self.timer._restart_clock()

    def on_save(self, args, state, control, **kwargs):
        self.timer._restart_clock()


class Throughput(RecipePlugin):
    """Adds throughput and memory figures to every training log."""

    order = -10  # before the plugins that write the logs out

    def on_recipe_parsed(self, recipe) -> None:
        # Tokens/s needs the trainer to count tokens; the recipe says how (and recipe.yaml records
        # it), rather than this plugin changing a setting behind the user's back.
        if str(recipe.training.include_num_input_tokens_seen) in ("no", "False"):
            raise RecipeError(
                "the plugin plugins.throughput.Throughput reports tokens per second, so the trainer must count "
                "tokens: add `include_num_input_tokens_seen: non_padding` to the recipe (`all` counts padding too), "
                "or remove the plugin."
            )

    def callbacks(self, recipe) -> list[TrainerCallback]:
        self.timer = ThroughputCallback()
        return [self.timer]

    def on_trainer_ready(self, trainer, recipe) -> None:
        trainer.add_callback(RestartClockAfterPauses(self.timer))  # last in line, after every pause's work
