"""Throughput: non-padding tokens per second, step time and peak GPU memory in the logs.

Add ``plugins.throughput.Throughput`` to a recipe's ``plugins``. Each training log entry then
carries ``tokens_per_second`` (non-padding tokens of all processes over the time spent in optimizer
steps since the previous log, batch loading included, evaluation and checkpoint pauses not),
``step_time_seconds`` and, on a GPU, ``peak_memory_gib`` / ``peak_reserved_gib``. They
reach ``trainer_state.json`` and, with the loss-curves plugin, the CSV and a chart.

Tokens come from the trainer's own count when the recipe asks for it
(``include_num_input_tokens_seen: non_padding``), else from TRL's ``num_tokens``, which TRL's
trainer logs on its own. On a GPU the clock is a CUDA event recorded at each step's end and read
only at a log: a ``torch.cuda.synchronize()`` per step would stall the CPU until the GPU had
finished, so it could not queue the next step's work while the GPU runs the current one.
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from plugins.base import RecipePlugin

logger = logging.getLogger(__name__)


def _cuda():
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def _trainer_counts_tokens(args) -> bool:
    return args is not None and str(getattr(args, "include_num_input_tokens_seen", "no")) not in ("no", "False")


class ThroughputCallback(TrainerCallback):
    """Times each optimizer step from the end of the one before, so fetching and collating its batch
    counts: the trainer loads the next batch before ``on_step_begin``, and a clock started there
    would leave that time out. Logging, evaluation and checkpoint saving are pauses: each of their
    hooks restarts the clock, so the next step is timed from the end of the last pause.

    The time since the last log is kept as stretches of steps between pauses, each a start and an
    end mark (CUDA events on a GPU, ``time.perf_counter()`` values on a CPU), and summed at the log."""

    def __init__(self) -> None:
        self.trains_begun = 0
        self.stretches: list[list] = []  # [start mark, end mark or None] per run of steps without a pause
        self.steps = 0
        self.tokens_at_last_log: float | None = None
        self.warned_no_tokens = False

    @staticmethod
    def _mark():
        cuda = _cuda()
        if cuda is None:
            return time.perf_counter()
        event = cuda.Event(enable_timing=True)
        event.record()  # stamped when the GPU gets there: the work queued before it counts, nothing waits
        return event

    @staticmethod
    def _seconds_between(start, end) -> float:
        if not hasattr(start, "elapsed_time"):  # perf_counter() values
            return end - start
        end.synchronize()  # at a log only; the trainer reads the loss there anyway
        return start.elapsed_time(end) / 1000.0

    def _restart_clock(self) -> None:
        mark = self._mark()
        if self.stretches and self.stretches[-1][1] is None:
            self.stretches[-1][0] = mark  # a pause right after a pause: the open stretch starts later
        else:
            self.stretches.append([mark, None])

    def _train_seconds(self) -> float:
        return sum(self._seconds_between(start, end) for start, end in self.stretches if end is not None)

    def _tokens_seen(self, args, state, logs: dict | None) -> float | None:
        if _trainer_counts_tokens(args):
            return state.num_input_tokens_seen
        return (logs or {}).get("num_tokens")  # TRL's own count, cumulative

    def on_train_begin(self, args, state, control, **kwargs):
        # The trainer's count is restored on resume. TRL's starts at 0 with each trainer object and
        # keeps growing if train() runs again on it (a notebook, a batch-size retry). Its running value
        # is not public (only its logs are), so after a first train() on this trainer the first
        # window's start is unknown: that window gets a step time and no tokens_per_second.
        if _trainer_counts_tokens(args):
            self.tokens_at_last_log = state.num_input_tokens_seen
        else:
            self.tokens_at_last_log = 0 if self.trains_begun == 0 else None
        self.trains_begun += 1
        self.stretches, self.steps = [], 0
        self._restart_clock()

    def on_step_end(self, args, state, control, **kwargs):
        if not self.stretches:
            self._restart_clock()
        self.stretches[-1][1] = self._mark()
        self.steps += 1

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_save(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_log(self, args, state, control, logs=None, **kwargs):
        try:
            self._report(args, state, logs)
        finally:
            self._restart_clock()

    def _report(self, args, state, logs: dict | None) -> None:
        if logs is None or "loss" not in logs or self.steps == 0:
            return
        seconds, steps = self._train_seconds(), self.steps
        self.stretches, self.steps = [stretch for stretch in self.stretches if stretch[1] is None], 0
        tokens_seen = self._tokens_seen(args, state, logs)
        start = self.tokens_at_last_log
        tokens = None if tokens_seen is None or start is None else tokens_seen - start
        if tokens_seen is not None:
            self.tokens_at_last_log = tokens_seen  # this window's tokens never spill into the next one's
        if seconds <= 0:
            return
        measured = {"step_time_seconds": round(seconds / steps, 4)}
        if tokens is not None:
            measured["tokens_per_second"] = round(tokens / seconds, 2)
        elif tokens_seen is None and not self.warned_no_tokens:
            self.warned_no_tokens = True
            logger.warning(
                "plugins.throughput.Throughput: no token count in the logs, so no tokens_per_second (step time "
                "only). TRL's trainer logs num_tokens; with another trainer, add "
                "`include_num_input_tokens_seen: non_padding` to the recipe."
            )
        cuda = _cuda()
        if cuda is not None:
            measured["peak_memory_gib"] = round(cuda.max_memory_allocated() / 2**30, 3)
            measured["peak_reserved_gib"] = round(cuda.max_memory_reserved() / 2**30, 3)
        logs.update(measured)  # seen by the callbacks after this one (loss curves)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(measured)  # and kept in trainer_state.json


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

    def callbacks(self, recipe) -> list[TrainerCallback]:
        self.timer = ThroughputCallback()
        return [self.timer]

    def on_trainer_ready(self, trainer, recipe) -> None:
        trainer.add_callback(RestartClockAfterPauses(self.timer))  # last in line, after every pause's work
