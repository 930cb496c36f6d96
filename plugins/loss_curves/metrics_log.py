"""The run's metrics as rows, kept on disk as ``metrics.jsonl`` and ``metrics.csv``.

One row per log entry of the trainer, tagged with its kind (``train``, ``eval``,
``summary``, ``final_eval``). Both files are rewritten atomically at every log, so a
killed run keeps every row logged until then and never a half-written line; a resumed
run first drops the rows logged after the checkpoint it resumes from, so each step
appears once.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from recipekit.errors import RecipeError
from recipekit.runtime.atomic_io import atomic_write_text

JSONL_NAME, CSV_NAME = "metrics.jsonl", "metrics.csv"
LEADING_COLUMNS = ("step", "epoch", "kind")


def row_kind(entry: dict[str, Any], training_ended: bool = False) -> str:
    """Classify a trainer log entry: training loss, evaluation, or the end-of-training summary."""
    if any(key.startswith("eval_") for key in entry):
        return "final_eval" if training_ended else "eval"
    if "train_loss" in entry or ("train_runtime" in entry and "loss" not in entry):
        return "summary"  # the end-of-training totals (train_loss, train_runtime, ...)
    return "train"


class MetricsLog:
    """Rows of one run plus their two files in ``run_dir``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []

    @property
    def jsonl_path(self) -> Path:
        return self.run_dir / JSONL_NAME

    @property
    def csv_path(self) -> Path:
        return self.run_dir / CSV_NAME

    def start(self, resumed_step: int, log_history: list[dict[str, Any]] | None = None) -> None:
        """Fresh run: start empty. Resumed run: keep the rows up to the checkpoint's step, less the
        end-of-training rows (the summary and final evaluation: a run stopped after writing them,
        by a full disk say, writes them again when it ends); when the file is damaged, rebuild the
        rows from the checkpoint's log history and say so."""
        self.rows = []
        if resumed_step > 0 and self.jsonl_path.exists():
            try:
                rows = read_jsonl_rows(self.jsonl_path)
            except RecipeError as exc:
                print(f"{exc} Rebuilt the rows up to step {resumed_step} from the checkpoint's trainer state.")
                rows = rows_from_log_history(log_history or [])
            self.rows = [r for r in rows if int(r.get("step") or 0) <= resumed_step
                         and r.get("kind") not in ("summary", "final_eval")]
        self.write()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)
        atomic_write_text(self.jsonl_path, jsonl)
        atomic_write_text(self.csv_path, rows_to_csv(self.rows))


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with the leading columns first, then every other key in order of first appearance."""
    columns = list(LEADING_COLUMNS)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl, or a RecipeError naming the first damaged line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path} cannot be read ({exc}).") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or not all(
                isinstance(row.get(k), (int, float, type(None))) for k in ("loss", "eval_loss", "learning_rate")):
            raise RecipeError(f"{path}, line {number}: not a metrics row (torn or edited).")
        rows.append(row)
    return rows


def rows_from_log_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows from the ``log_history`` of any HF Trainer's ``trainer_state.json``."""
    rows, ended = [], False
    for entry in log_history:
        kind = row_kind(entry, ended)
        ended = ended or kind == "summary"
        rows.append({"step": entry.get("step"), "epoch": entry.get("epoch"), "kind": kind, **entry})
    return rows


def find_trainer_state(run_dir: Path) -> Path | None:
    """``trainer_state.json`` of the run, or of its newest checkpoint when the run did not finish."""
    direct = run_dir / "trainer_state.json"
    if direct.is_file():
        return direct
    checkpoints = sorted(
        (p for p in run_dir.glob("checkpoint-*/trainer_state.json") if p.parent.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.parent.name.split("-")[-1]),
    )
    return checkpoints[-1] if checkpoints else None


def read_run_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's rows from ``metrics.jsonl``, else from ``trainer_state.json``."""
    run = Path(run_dir)
    state = find_trainer_state(run)
    if (run / JSONL_NAME).exists():
        try:
            return read_jsonl_rows(run / JSONL_NAME)
        except RecipeError as exc:
            if state is None:
                raise
            print(f"{exc} Drawing from {state} instead.", file=sys.stderr)
    if state is None:
        raise RecipeError(
            f"{run} holds neither {JSONL_NAME} nor a trainer_state.json (also none in checkpoint-*/). "
            "Point at the output_dir of a training run."
        )
    try:
        history = json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    except (OSError, ValueError, AttributeError, RecursionError) as exc:
        raise RecipeError(f"{state} is not a readable trainer state ({exc}).") from None
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise RecipeError(f"{state}: its log_history is not a list of log entries.")
    return rows_from_log_history(history)
