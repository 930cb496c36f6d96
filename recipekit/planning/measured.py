"""The project's measured throughput and peak memory for a recipe, read from ``bench/results``.

``bench/throughput.py`` writes one row per variant it trains: its name, ``tokens_per_second``,
``peak_allocated_gib`` / ``peak_reserved_gib``, the ``gpu`` and the resolved recipe it ran
(``settings``), on random weights of a named model ``shape``; a recipe's own row is named after
the recipe (``--variant "nemotron_fiqa_qlora=recipes/nemotron_fiqa_qlora.yaml"``). A row measures
this recipe when it has the recipe's name, ran the same model shape, and ran the same settings
wherever a setting changes speed or memory;
settings that only steer the schedule, evaluation, checkpoints, logging or where files are
(and those the benchmark harness overrides for every row) are not compared. Nothing here is
a typed-in figure: every number printed comes from a committed file, named with its row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipekit.config.recipe import Recipe, to_plain
from recipekit.config.schema import PROJECT_DEFAULTS, load_schema

# The committed measurements, beside the code that wrote them (a checkout; an installed wheel has none,
# and then every figure is "not measured").
RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results"

# The model each benchmark shape stands for: bench/throughput.py's SHAPES["nemotron"] is the exact
# Llama-3.1-Nemotron-Nano-8B-v1 architecture with random weights ("nemotron-4-layers" and "tiny" are
# smaller models, not this one).
MODEL_OF_SHAPE = {"nemotron": "nvidia/Llama-3.1-Nemotron-Nano-8B-v1"}

# Keys that do not change tokens/s or training memory, or that bench/throughput.py's
# measured_run_overrides sets for every row (model path, data, output, steps, logging, no
# evaluation or checkpoints, its plugins): a row and a recipe may differ in them.
NOT_COMPARED = frozenset({
    # where things are, and the measuring harness
    "model_name_or_path", "data_dir", "train_split", "eval_split", "output_dir", "overwrite_output_dir",
    "resume_from_checkpoint", "resume_despite_changes", "recipe_name", "build_smoke_assets", "plugins", "report_to",
    "max_steps", "logging_steps", "logging_first_step", "logging_nan_inf_filter",
    # schedule and optimisation values (same work per step)
    "num_train_epochs", "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay",
    "max_grad_norm", "seed",
    # evaluation and checkpoints (the throughput rows train with neither)
    "eval_strategy", "eval_steps", "per_device_eval_batch_size", "save_strategy", "save_steps", "save_total_limit",
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "push_to_hub", "hub_model_id",
})


@dataclass(frozen=True)
class Measurement:
    """One measured row, with the file it is in."""

    file: str
    date: str
    name: str
    gpu: str
    tokens_per_second: float
    peak_allocated_gib: float | None
    peak_reserved_gib: float | None

    def cite(self) -> str:
        return f"bench/results/{self.file}, row `{self.name}`, {self.gpu}, {self.date}"


@dataclass
class Lookup:
    """The rows that measured this recipe (newest date only), or the nearest row and how it differs."""

    rows: list[Measurement] = field(default_factory=list)
    nearest: Measurement | None = None
    differences: list[str] = field(default_factory=list)
    why_none: str | None = None


def _setting(values: dict[str, Any], key: str, defaults: dict[str, Any]) -> Any:
    value = values[key] if key in values else defaults.get(key)
    return to_plain(value)


def differences(recipe_values: dict[str, Any], row_settings: dict[str, Any], defaults: dict[str, Any],
                ignore: frozenset[str] = frozenset()) -> list[str]:
    """``key: recipe X, measured Y`` for every compared setting the row ran differently."""
    found = []
    for key in sorted((set(recipe_values) | set(row_settings)) - NOT_COMPARED - ignore):
        if key not in defaults:
            continue  # a plugin's own key (its plugin's work is not in the throughput rows)
        mine, theirs = _setting(recipe_values, key, defaults), _setting(row_settings, key, defaults)
        if mine != theirs:
            found.append(f"{key}: recipe {mine!r}, measured {theirs!r}")
    return found


def measured_rows(results_dir: Path = RESULTS_DIR) -> list[tuple[dict, dict, str]]:
    """Every throughput row with its report and file name: rows with a rate and the settings they ran."""
    rows = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or not isinstance(report.get("results"), list):
            continue
        for row in report["results"]:
            if isinstance(row, dict) and row.get("tokens_per_second") and isinstance(row.get("settings"), dict):
                rows.append((report, row, path.name))
    return rows


def find_measurements(recipe: Recipe, ignore: frozenset[str] = frozenset(),
                      results_dir: Path = RESULTS_DIR) -> Lookup:
    """The newest rows named after this recipe that ran its model shape and speed-relevant settings.

    The name is required as well as the settings: the data a row trained on is not in its settings
    (its ``data_dir`` is the benchmark's), so a recipe with the same settings over another prompt
    format (nemotron_fiqa_chat_qlora against nemotron_fiqa_qlora) is not the measured one. ``ignore`` names settings the plan itself changed to read the recipe (``use_cpu`` on a
    machine without a GPU). When no row matches, the row of the same model that differs in the
    fewest settings is returned as ``nearest``, with its differences, for the user to judge.
    """
    model = recipe.model.model_name_or_path
    shapes = {shape for shape, name in MODEL_OF_SHAPE.items() if name == model}
    if not shapes:
        return Lookup(why_none=f"bench/results measures {', '.join(sorted(MODEL_OF_SHAPE.values()))} only, not {model}")
    defaults = {**{k: s.default for k, s in load_schema().items()}, **PROJECT_DEFAULTS}
    candidates = []
    for report, row, name in measured_rows(results_dir):
        if report.get("shape") not in shapes or "error" in row:
            continue
        found = differences(recipe.resolved, row["settings"], defaults, ignore)
        candidates.append((found, Measurement(
            file=name, date=str(report.get("date", "undated")), name=str(row.get("name")),
            gpu=str(row.get("gpu", "unknown GPU")), tokens_per_second=float(row["tokens_per_second"]),
            peak_allocated_gib=row.get("peak_allocated_gib"), peak_reserved_gib=row.get("peak_reserved_gib"))))
    matching = [m for found, m in candidates if not found and m.name == recipe.name]
    if matching:
        newest = max(m.date for m in matching)
        return Lookup(rows=[m for m in matching if m.date == newest])
    if not candidates:
        return Lookup(why_none=f"no throughput row of {model} in bench/results")
    newest = max(m.date for _, m in candidates)
    found, nearest = min(candidates, key=lambda c: (len(c[0]), c[1].name != recipe.name, c[1].date != newest))
    named = any(m.name == recipe.name for _, m in candidates)
    why = (f"no row named `{recipe.name}` ran these settings" if named
           else f"no row in bench/results is named `{recipe.name}`")
    return Lookup(nearest=nearest, differences=found, why_none=why)
