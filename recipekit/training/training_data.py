"""The train and eval sets of a recipe, from all its sources, audited and mixed.

Each source (``recipekit.training.sources``) is read and checked on its own, so an error
names its file and line; each gets its own truncation audit, so a report says which source
lost answers to ``max_length``; then the train parts are mixed by weight. What went into the
mixture (rows per source, their sha256, the prompt format) is kept for the run manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preprocess.prompt_format import detect_prompt_format
from recipekit.config.recipe import Recipe
from recipekit.config.values import evaluation_on
from recipekit.errors import RecipeError
from recipekit.training.data import (
    TruncationReport,
    audit_truncation,
    read_split,
    records_dataset,
    split_path,
)
from recipekit.training.sources import DataSource, mix, read_source, recipe_sources, records_sha256


@dataclass
class TrainingData:
    """What the trainer trains and evaluates on, and what the manifest records of it."""

    datasets: dict[str, Any]  # "train", and "eval" when evaluation is on
    reports: list[TruncationReport]
    prompt_format: str
    sources: dict[str, dict] = field(default_factory=dict)  # manifest key -> path, sha256, rows, rows_used, weight


def _is_folder(source: DataSource, recipe: Recipe) -> bool:
    return not recipe.recipe.datasets or source.kind == "folder"


def _key(split: str, source: DataSource, index: int, recipe: Recipe) -> str:
    """The manifest's name for one split of one source; the one-folder case keeps the split's name."""
    return split if not recipe.recipe.datasets else f"{split} {source.label(index)}"


def data_files(recipe: Recipe) -> dict[str, Path]:
    """The local files a run trains and evaluates on, by manifest key (hub sources have none)."""
    files: dict[str, Path] = {}
    for index, source in enumerate(recipe_sources(recipe.recipe)):
        if _is_folder(source, recipe):
            splits = [recipe.recipe.train_split]
            if evaluation_on(recipe.training.eval_strategy) and recipe.recipe.eval_split:
                splits.append(recipe.recipe.eval_split)
            for split in splits:
                path = split_path(source.path, split)
                if path.is_file() or split == recipe.recipe.train_split:
                    files[_key(split, source, index, recipe)] = path
        elif source.kind == "file":
            files[_key(recipe.recipe.train_split, source, index, recipe)] = Path(source.path)
    return files


def choose_prompt_format(recipe: Recipe, folder_records: dict[int, list[dict]], sources: list[DataSource]) -> str:
    """The recipe's ``prompt_format``, else its folders' (which must agree), else ``completion``."""
    found: dict[str, str] = {}
    for index, records in folder_records.items():
        try:
            found[sources[index].path] = detect_prompt_format(records[0])
        except ValueError as exc:
            raise RecipeError(f"{split_path(sources[index].path, recipe.recipe.train_split)}, line 1: {exc}.") from None
    formats = set(found.values())
    wanted = recipe.recipe.prompt_format
    if len(formats) > 1 or (wanted and formats and formats != {wanted}):
        listed = "; ".join(f"{path}: {fmt}" for path, fmt in found.items())
        asked = f"`prompt_format: {wanted}`; " if wanted else ""
        raise RecipeError(f"the recipe's data is in more than one prompt format ({asked}{listed}). A model learns one "
                          "way of being asked: write every folder with the same `python -m preprocess.fiqa --format`.")
    return wanted or (formats.pop() if formats else "completion")


def _audited(dataset, recipe: Recipe, tokenizer, name: str):
    args = recipe.training
    truncates = not args.packing or args.packing_strategy == "bfd"
    dataset, report = audit_truncation(dataset, tokenizer, args.max_length, name, truncates, args.eos_token)
    if report.left_out * 2 > report.examples:
        raise RecipeError(
            f"`max_length` {args.max_length} is too short for the prompts: {report.left_out} of "
            f"{report.examples} {name} examples have prompts that fill it, leaving no answer token to learn "
            f"from. Raise max_length (the longest prompt is {report.longest_prompt_tokens} tokens; "
            f"the longest example {report.longest_tokens})."
        )
    return dataset, report


def load_training_data(recipe: Recipe, tokenizer) -> TrainingData:
    """Read every source, audit each for truncation, mix the train parts by weight, gather the eval splits."""
    from datasets import concatenate_datasets

    from recipekit.rundir.manifest import sha256_of

    sources = recipe_sources(recipe.recipe)
    train_split, eval_split = recipe.recipe.train_split, recipe.recipe.eval_split
    folder_records = {i: read_split(s.path, train_split) for i, s in enumerate(sources) if _is_folder(s, recipe)}
    prompt_format = choose_prompt_format(recipe, folder_records, sources)
    parts, reports, entries = [], [], {}
    for index, source in enumerate(sources):
        key = _key(train_split, source, index, recipe)
        if index in folder_records:
            records, file = folder_records[index], split_path(source.path, train_split)
        else:
            records = read_source(source, prompt_format)
            file = Path(source.path) if source.kind == "file" else None
        dataset, report = _audited(records_dataset(records, source.path, train_split), recipe, tokenizer, key)
        parts.append(dataset)
        reports.append(report)
        entries[key] = {"path": str(file or source.path), "kind": "folder" if index in folder_records else source.kind,
                        "sha256": sha256_of(file) if file else records_sha256(records), "rows": len(records),
                        "rows_trainable": len(dataset), "weight": source.weight}
    train, used = mix(parts, [s.weight for s in sources], recipe.training.seed)
    for entry, rows in zip(entries.values(), used):
        entry["rows_used"] = rows
    datasets = {"train": train}
    if evaluation_on(recipe.training.eval_strategy):
        evals = []
        for index in folder_records:
            file = split_path(sources[index].path, eval_split)
            if not file.is_file() and recipe.recipe.datasets:
                continue  # another folder holds the eval split (checked when the recipe was read)
            key = _key(eval_split, sources[index], index, recipe)
            records = read_split(sources[index].path, eval_split)
            dataset, report = _audited(records_dataset(records, sources[index].path, eval_split), recipe, tokenizer, key)
            evals.append(dataset)
            reports.append(report)
            entries[key] = {"path": str(file), "kind": "folder", "sha256": sha256_of(file), "rows": len(records),
                            "rows_used": len(dataset)}
        datasets["eval"] = evals[0] if len(evals) == 1 else concatenate_datasets(evals)
    return TrainingData(datasets, reports, prompt_format, entries)
