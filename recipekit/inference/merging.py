"""Fold a run's adapter into the base weights: a plain model folder any server loads.

The base model is loaded unquantized in the recipe's dtype (for a QLoRA run: the bf16 base,
not the 4-bit one, since 4-bit weights cannot absorb the update exactly), the LoRA update is
merged with PEFT's ``merge_and_unload``, and the folder gets the run's tokenizer with the
chat template and ``generation_config.json`` that make vLLM, TGI or ``transformers`` ask and
stop as ``recipes.evaluate`` did (``recipekit.inference.serving``). Used by
``recipes.merge`` and by ``push_merged_model``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from recipekit.errors import RecipeError
from recipekit.inference.serving import write_serving_files
from recipekit.inference.trained_run import (
    load_adapter_model,
    load_run_recipe,
    load_run_tokenizer,
    run_prompt_format,
)


def out_dir_problem(run_dir: Path, out_dir: Path) -> str | None:
    """Why ``--out`` would put the run itself at risk, or None: with ``--overwrite`` the folder is
    replaced, so it must not be the run, lie inside it, or hold it."""
    run, out = run_dir.resolve(), out_dir.resolve()
    if out == run:
        where = "is the run folder"
    elif run in out.parents:
        where = "lies inside the run folder"
    elif out in run.parents:
        where = "holds the run folder"
    else:
        return None
    return (f"--out {out_dir} {where} {run_dir}: the merged model replaces what is at --out, so the run's adapter, "
            f"checkpoints and manifest would be lost. Choose a folder outside the run, e.g. --out {run.name}-merged.")


def merge_run(run_dir: Path, out_dir: Path, overwrite: bool = False) -> Path:
    problem = out_dir_problem(run_dir, out_dir)  # before anything loads
    if problem:
        raise RecipeError(problem)
    out_dir = out_dir.resolve()  # `--out .` has no name to put the staging folder beside
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RecipeError(f"--out {out_dir} exists and is not empty. Choose a new folder or pass --overwrite.")
    recipe = load_run_recipe(run_dir)
    prompt_format = run_prompt_format(run_dir, recipe)
    tokenizer = load_run_tokenizer(run_dir)
    # In the recipe's own dtype, on a CPU too: a bf16 run merges into a bf16 model, as its base is.
    model = load_adapter_model(run_dir, recipe, quantized=False, keep_dtype=True).merge_and_unload()
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    write_serving_files(staging, tokenizer, prompt_format, model.generation_config)
    # The old folder (with --overwrite) is moved aside, not deleted, until the new one is in place:
    # if the new one cannot be put in place, the old one is put back.
    previous = out_dir.with_name(out_dir.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(previous)
    try:
        staging.rename(out_dir)  # the merged model appears whole or not at all
    except OSError:
        if previous.exists():
            previous.rename(out_dir)  # put the old model back rather than leave nothing
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return out_dir
