"""``recipes.run RECIPE --plan``: what a run would cost, printed before anything is spent.

Reads the recipe as a run would (without the checks of this machine: a plan of a GPU recipe is
made on a laptop too), counts the data and the steps (``workload``), looks up the project's
measured rate and memory (``measured``), sizes the checkpoints and reads the visible card
(``footprint``), and prints one line each. Writes nothing into ``output_dir``: no lock, no
manifest, no run. The smoke recipe's own model and data are built first where missing
(``build_smoke_assets``, in their own folder), because the plan counts with their real tokenizer.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from recipekit.config.recipe import Recipe
from recipekit.errors import ExitCode
from recipekit.planning.footprint import (
    GIB,
    VisibleGpu,
    adapter_dtype,
    optimizer_copies,
    saves_and_kept,
    trainable_parameters,
    visible_gpu,
)
from recipekit.planning.measured import Lookup, Measurement, find_measurements
from recipekit.planning.request import PRICE_FLAG, PlanRequest
from recipekit.planning.workload import Workload, plan_workload

WIDTH = "         "  # continuation lines line up under the first line's text


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB else f"{n_bytes / 2**20:.1f} MiB"


def data_lines(recipe: Recipe, work: Workload) -> list[str]:
    left = f", {work.left_out} left out by the truncation audit" if work.left_out else ", none left out by the truncation audit"
    tokens = f"{'~' if work.estimate else ''}{work.tokens_per_epoch:,} tokens an epoch"
    source = f"{recipe.recipe.data_dir}/{recipe.recipe.train_split}.jsonl"
    after = "packing" if recipe.training.packing else "truncation"
    lines = [f"data:    {work.examples:,} training examples ({source}{left}); {tokens}, after TRL's {after}"]
    if work.estimate:
        lines.append(f"{WIDTH}{work.estimate}.")
    return lines


def steps_line(recipe: Recipe, work: Workload) -> str:
    args = recipe.training
    if args.packing:
        what = (f"{'~' if work.estimate else ''}{work.sequences_per_epoch:,} packs of up to {args.max_length} tokens "
                f"an epoch (trl.data_utils.pack_dataset, {args.packing_strategy})")
    else:
        what = f"{work.sequences_per_epoch:,} examples an epoch (unpacked, up to max_length {args.max_length} tokens)"
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * work.world_size
    epochs = f"max_steps {args.max_steps}" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"
    return (f"steps:   {what}; {args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} "
            f"accumulation x {work.world_size} process{'es' if work.world_size > 1 else ''} = {per_step} "
            f"{work.unit if per_step > 1 else work.unit.rstrip('s')} "
            f"a step: {work.steps_per_epoch:,} optimizer steps an epoch, {work.max_steps:,} in all ({epochs})")


def rate_text(rows: list[Measurement]) -> str:
    rates = sorted(r.tokens_per_second for r in rows)
    shown = f"{rates[0]:,.0f}" if len(rates) == 1 else f"{rates[0]:,.0f}-{rates[-1]:,.0f}"
    return f"{shown} tok/s ({'; '.join(r.cite() for r in rows)})"


def time_range(work: Workload, rows: list[Measurement]) -> tuple[float, float]:
    """Seconds of training at the fastest and slowest measured rate, the processes sharing the tokens."""
    rates = [r.tokens_per_second * work.world_size for r in rows]
    return work.total_tokens / max(rates), work.total_tokens / min(rates)


def span(seconds: tuple[float, float]) -> str:
    low, high = duration(seconds[0]), duration(seconds[1])
    return low if low == high else f"{low} to {high}"


def measured_for(lookup: Lookup, gpu: VisibleGpu | None) -> tuple[list[Measurement], str | None]:
    """The rows that predict for this machine's card, or the rows to show for reference and the label."""
    if not lookup.rows:
        return [], None
    if gpu is not None:
        same = [r for r in lookup.rows if r.gpu == gpu.name]
        if same:
            return same, None
        others = sorted({r.gpu for r in lookup.rows})
        return lookup.rows, (f"not measured for this GPU ({gpu.name}); measured on {', '.join(others)} only, "
                             "shown for reference, not a prediction for this card")
    return lookup.rows, (f"no GPU visible here, so no prediction for this machine; on "
                         f"{', '.join(sorted({r.gpu for r in lookup.rows}))}, where it was measured")


def time_lines(work: Workload, lookup: Lookup, gpu: VisibleGpu | None) -> tuple[list[str], tuple[float, float] | None]:
    """The time lines and the (low, high) seconds a cost is priced at, if any."""
    tokens = f"{'~' if work.estimate else ''}{work.total_tokens:,.0f} tokens"
    scaling = (f" over {work.world_size} GPUs, assuming each keeps the one-GPU rate (multi-GPU scaling of this recipe "
               "is not in these rows)" if work.world_size > 1 else "")
    rows, label = measured_for(lookup, gpu)
    if rows:
        seconds = time_range(work, rows)
        head = f"time:    {span(seconds)} predicted" if label is None else f"time:    {label}: {span(seconds)}"
        line = (f"{head} of training ({tokens} at {rate_text(rows)}{scaling}); model loading, evaluation and "
                "checkpoint saving come on top.")
        return [line], seconds
    lines = [f"time:    not measured for this recipe: {lookup.why_none}."]
    if lookup.nearest is not None:
        seconds = time_range(work, [lookup.nearest])
        differs = "; ".join(lookup.differences) if lookup.differences else "the same speed settings, another recipe"
        lines.append(f"{WIDTH}Nearest measured row, for reference only: {lookup.nearest.cite()} ({differs}): "
                     f"{span(seconds)} at its {lookup.nearest.tokens_per_second:,.0f} tok/s for {tokens}{scaling}.")
    return lines, None


def memory_line(lookup: Lookup, gpu: VisibleGpu | None) -> str:
    rows, label = measured_for(lookup, gpu)
    card = ("this machine: no GPU visible" if gpu is None else
            f"this card ({gpu.name}): {gpu.free_bytes / GIB:.1f} GiB free of {gpu.total_bytes / GIB:.1f}")
    if not rows:
        nearest = lookup.nearest
        reference = "" if nearest is None or nearest.peak_allocated_gib is None else (
            f" (the nearest row above, for reference only: {nearest.peak_allocated_gib} GiB allocated"
            + (f", {nearest.peak_reserved_gib} GiB reserved" if nearest.peak_reserved_gib is not None else "") + ")")
        return f"memory:  peak GPU memory not measured for this recipe{reference}; {card}."
    allocated = max((r.peak_allocated_gib for r in rows if r.peak_allocated_gib is not None), default=None)
    reserved = max((r.peak_reserved_gib for r in rows if r.peak_reserved_gib is not None), default=None)
    if allocated is None and reserved is None:
        return f"memory:  the measured rows hold no peak memory; {card}."
    need = reserved if reserved is not None else allocated
    figures = ", ".join(f"{v} GiB {k}" for k, v in (("allocated", allocated), ("reserved", reserved)) if v is not None)
    where = f" on {', '.join(sorted({r.gpu for r in rows}))}"
    verdict = ""
    if gpu is not None:
        spare = gpu.free_bytes / GIB - need
        verdict = (f": fits, {spare:.1f} GiB to spare" if spare >= 0 else f": does NOT fit, {-spare:.1f} GiB short")
        verdict += "" if label is None else " (by another GPU's figure)"
    return (f"memory:  peak per GPU {figures} by PyTorch while training (no evaluation; the CUDA context comes on top), "
            f"measured{where} in the same rows; {card}{verdict}.")


def disk_line(recipe: Recipe, work: Workload) -> str:
    trainable, why = trainable_parameters(recipe)
    if trainable is None:
        return (f"disk:    checkpoint size not known: {why}. The plan sizes the adapter from the model's config.json "
                "(a few KB, no weights) wherever it can be read.")
    width, dtype_why = adapter_dtype(recipe)
    adapter = trainable * width
    copies, optim_why = optimizer_copies(str(getattr(recipe.training.optim, "value", recipe.training.optim)))
    saves, peak, kept_why = saves_and_kept(recipe, work.max_steps, work.steps_per_epoch)
    head = (f"disk:    adapter {trainable:,} trainable parameters x {width} bytes, {dtype_why} = {size(adapter)}; "
            f"the final adapter in output_dir: {size(adapter)}")
    if saves == 0:
        return head + f"; no checkpoints ({kept_why})."
    if copies is None:
        return head + f"; {saves} checkpoints, each the adapter plus optimizer state: not sized ({optim_why})."
    checkpoint = adapter * (1 + copies) + (work.tokenizer_bytes or 0)
    holds = f"it and {optim_why}" + (f", and the tokenizer files ({size(work.tokenizer_bytes)})"
                                      if work.tokenizer_bytes else "")
    missing = ("the trainer, scheduler and random-state files (tens of KB)" if work.tokenizer_bytes
               else "the tokenizer files (the tokenizer is not loaded here) and the trainer, scheduler and random-state "
               "files (tens of KB)")
    return (head + f"; a checkpoint holds {holds}: {size(checkpoint)}; {saves} written, at most {peak} on disk at "
            f"once ({kept_why}): {size(checkpoint * peak + adapter)} with the final adapter. Not counted: {missing}.")


def cost_line(price: float, seconds: tuple[float, float] | None, work: Workload, reference: bool) -> str:
    if seconds is None:
        return f"cost:    not computed at {PRICE_FLAG} {price:g}: no measured time for this recipe."
    low, high = (s / 3600 * work.world_size * price for s in seconds)
    amount = f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"
    label = " (at the other GPU's measured time above, not this machine's)" if reference else ""
    return (f"cost:    {amount} at {price:g} per GPU hour x {work.world_size} GPU{'s' if work.world_size > 1 else ''}, "
            f"training time only{label}.")


def plan_lines(recipe: Recipe, price: float | None, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The plan, line by line (each figure with where it comes from)."""
    work = plan_workload(recipe)
    lookup = find_measurements(recipe, ignore)
    gpu = visible_gpu()
    times, seconds = time_lines(work, lookup, gpu)
    head = (f"plan for recipe {recipe.name} ({recipe.path}): nothing is trained, and nothing is written to "
            f"{recipe.training.output_dir}.")
    lines = [head, *data_lines(recipe, work), steps_line(recipe, work), *times, memory_line(lookup, gpu),
             disk_line(recipe, work)]
    if price is not None:
        lines.append(cost_line(price, seconds, work, measured_for(lookup, gpu)[1] is not None))
    return lines


def read_recipe_for_plan(argv: list[str]) -> tuple[Recipe, frozenset[str]]:
    """The recipe as a run reads it, without this machine's checks; and the settings the plan set itself.

    transformers refuses ``bf16`` where no GPU is visible unless ``use_cpu`` is set, so on such a
    machine the plan reads the recipe with ``--use_cpu true`` (as ``recipes.merge`` reads a GPU run's
    recipe), and leaves ``use_cpu`` out of the comparison with the measured rows.
    """
    from recipekit.config.parse import parse_recipe, split_recipe_argv
    from recipekit.planning.footprint import visible_gpu as gpu_here

    path, overrides = split_recipe_argv(argv)
    added: list[str] = []
    if "--use_cpu" not in overrides and gpu_here() is None:
        added = ["--use_cpu", "true"]
    recipe = parse_recipe([str(path), *added, *overrides], check_environment=False)
    return recipe, frozenset({"use_cpu"} if added else ())


def run_plan(request: PlanRequest) -> int:
    """Print the plan (main process only, under ``accelerate launch``); exit 0 unless the recipe or data is bad."""
    from recipekit.training.trainer import prepare_assets

    recipe, ignore = read_recipe_for_plan(request.argv)
    assets = [Path(recipe.model.model_name_or_path) / "config.json",
              Path(recipe.recipe.data_dir) / f"{recipe.recipe.train_split}.jsonl"]
    missing = recipe.recipe.build_smoke_assets and not all(path.is_file() for path in assets)
    prepare_assets(recipe)
    lines = plan_lines(recipe, request.gpu_hour_price, ignore)
    if missing:
        lines.insert(1, f"note:    built the recipe's own tiny model and data (build_smoke_assets: true) in "
                        f"{recipe.model.model_name_or_path} and {recipe.recipe.data_dir}, outside output_dir.")
    if os.environ.get("RANK", "0") == "0":
        print("\n".join(textwrap.fill(line, 118, subsequent_indent=WIDTH, break_on_hyphens=False,
                                       break_long_words=False) for line in lines))
    return ExitCode.OK
