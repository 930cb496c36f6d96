"""The recipe's ``datasets:`` list: several data sources, each read, checked and mixed by weight.

A source is a folder of splits written by ``python -m preprocess.fiqa`` (as ``data_dir``
always was), a JSONL, CSV or Parquet file of question/answer rows, or a hub dataset id. Rows
of files and hub datasets are turned into examples by ``preprocess.prompt_format``, the
function that wrote the FiQA splits, so every source gets the same system prompt and
prompt format. ``data_dir`` is the one-folder case of the same list.

A ``weight`` sets a source's part of the training mixture: a whole number is a row count, a
number between 0 and 1 a share of the mixture. A source asked for more rows than it has is
repeated; one asked for fewer is sampled with the recipe's seed. Every source's row counts
and sha256 go into the run manifest, and nothing is dropped without being counted.

This module is read when a recipe is parsed (the structure of the list, no heavy imports);
:func:`read_source` and :func:`mix` import ``datasets`` only when training data is built.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipekit.errors import RecipeError

SOURCE_KEYS = ("path", "columns", "weight", "name", "split")
FILE_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_COLUMNS = {"question": "question", "answer": "answer"}
# ``trl sft``'s ways to name data, which this project reads from ``datasets:`` (or ``data_dir``) instead.
TRL_DATA_KEYS = ("dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split", "dataset_streaming",
                 "streaming", "test_split_size")
DATASETS_EXAMPLE = "datasets:\n  - path: data/fiqa\n  - path: my_faq.jsonl\n    columns: {question: q, answer: a}\n    weight: 0.3"


@dataclass(frozen=True)
class DataSource:
    """One entry of ``datasets:``, as checked."""

    path: str
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    weight: float | int | None = None  # None: every row once; int >= 1: rows; 0 < float < 1: share
    name: str | None = None  # a hub dataset's configuration
    split: str = "train"  # a hub dataset's split

    @property
    def kind(self) -> str:
        """``folder`` (preprocess.fiqa splits), ``file`` (JSONL/CSV/Parquet rows) or ``hub`` (a dataset id)."""
        local = Path(self.path)
        if local.is_dir():
            return "folder"
        if local.suffix.lower() in FILE_SUFFIXES or local.exists():
            return "file"
        return "hub"

    def label(self, index: int) -> str:
        return f"source {index + 1} ({self.path})"


def trl_data_key_problem(key: str) -> str:
    """The message for a ``trl sft`` data key: where the data is named in this project instead."""
    return (f"`{key}` is how `trl sft` names its data; this project reads data from `datasets:` (a list of "
            f"folders, JSONL/CSV/Parquet files or hub ids, each with an optional weight) or `data_dir` (one folder "
            f"from preprocess.fiqa). For example:\n{DATASETS_EXAMPLE}")


def _entry_problem(entry: Any, where: str) -> str | None:
    if isinstance(entry, str):
        return None
    if not isinstance(entry, dict):
        return f"{where} is {entry!r}; give a path, or a mapping with `path:` (and optional columns, weight, name, split)"
    unknown = [k for k in entry if k not in SOURCE_KEYS]
    if unknown:
        return f"{where} has the unknown key `{unknown[0]}`; a source takes {', '.join(SOURCE_KEYS)}"
    if not isinstance(entry.get("path"), str) or not entry["path"].strip():
        return f"{where} has no `path` (a folder, a .jsonl/.csv/.parquet file or a hub dataset id)"
    columns = entry.get("columns", {})
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()) \
            or set(columns) - set(DEFAULT_COLUMNS):
        return (f"{where} has `columns: {columns!r}`; map the row's columns to `question` and `answer`, e.g. "
                "`columns: {question: q, answer: a}`")
    weight = entry.get("weight")
    if weight is not None:
        whole = isinstance(weight, int) and not isinstance(weight, bool) and weight >= 1
        share = isinstance(weight, float) and math.isfinite(weight) and 0 < weight < 1
        if not (whole or share):
            return (f"{where} has `weight: {weight!r}`; give a whole number of rows (e.g. 500) or a share of the "
                    "mixture between 0 and 1 (e.g. 0.3)")
    for key in ("name", "split"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f"{where} has `{key}: {entry[key]!r}`, where a name belongs"
    return None


def parse_sources(value: Any) -> tuple[list[dict] | None, str | None]:
    """``datasets:`` as plain, checked mappings (``(None, problem)`` when it is malformed).

    On the command line each item is one YAML value: ``--datasets data/fiqa "{path: x.csv, weight: 0.2}"``.
    """
    if value is None:
        return None, None
    if not isinstance(value, list) or not value:
        return None, f"`datasets` must be a list of sources, e.g.\n{DATASETS_EXAMPLE}"
    entries = []
    for index, raw in enumerate(value):
        if isinstance(raw, str) and raw.lstrip().startswith("{"):
            import yaml

            try:
                raw = yaml.safe_load(raw)
            except yaml.YAMLError:
                return None, f"`datasets` item {index + 1} ({raw}) is not a YAML mapping"
        if problem := _entry_problem(raw, f"`datasets` item {index + 1}"):
            return None, problem
        entry = {"path": raw} if isinstance(raw, str) else dict(raw)
        entries.append(entry)
    shares = [e["weight"] for e in entries if isinstance(e.get("weight"), float)]
    if shares and len(shares) == len(entries) and not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        return None, (f"every `datasets` source has a share, and the shares add up to {sum(shares):g}, not 1; make "
                      "them add up to 1, or give one source no weight (all its rows) or a row count")
    if shares and len(shares) < len(entries) and sum(shares) >= 1:
        return None, (f"the `datasets` shares add up to {sum(shares):g}, leaving nothing for the sources without "
                      "one; shares beside other sources must add up to less than 1")
    return entries, None


def recipe_sources(recipe_args) -> list[DataSource]:
    """The recipe's sources: its ``datasets:`` list, or its ``data_dir`` as the only one."""
    if recipe_args.datasets:
        return [DataSource(path=e["path"], columns={**DEFAULT_COLUMNS, **(e.get("columns") or {})},
                           weight=e.get("weight"), name=e.get("name"), split=e.get("split") or "train")
                for e in recipe_args.datasets]
    return [DataSource(path=recipe_args.data_dir)]


def evaluation_folder(recipe_args) -> str:
    """The folder whose splits ``recipes.evaluate`` and the GenerationEval plugin answer: the first
    preprocess.fiqa folder among the sources (``data_dir`` when the recipe lists none)."""
    folders = [s.path for s in recipe_sources(recipe_args) if not recipe_args.datasets or s.kind == "folder"]
    return folders[0] if folders else recipe_args.data_dir


def source_file_problem(source: DataSource, index: int) -> str | None:
    """Why a file or hub source cannot be read, found before anything loads."""
    from huggingface_hub import constants

    kind = source.kind
    if kind == "file" and not Path(source.path).is_file():
        return f"`datasets` {source.label(index)} does not exist. Give the path of a JSONL, CSV or Parquet file."
    if kind == "file" and Path(source.path).suffix.lower() not in FILE_SUFFIXES:
        return (f"`datasets` {source.label(index)} is a {Path(source.path).suffix or 'suffix-less'} file; give a "
                ".jsonl, .csv or .parquet file, or a folder written by preprocess.fiqa")
    if kind == "hub" and constants.HF_HUB_OFFLINE:
        return (f"`datasets` {source.label(index)} is neither a local folder nor a file, so it would be read from the "
                "Hugging Face Hub, and HF_HUB_OFFLINE is set. Check the path, or unset HF_HUB_OFFLINE.")
    return None


# --- reading rows ---------------------------------------------------------------------------------


def _rows_of_file(path: Path) -> list[tuple[str, dict]]:
    """``(where, row)`` for each row of a JSONL, CSV or Parquet file; ``where`` names the line or row."""
    kind = FILE_SUFFIXES[path.suffix.lower()]
    if kind == "json":
        from recipekit.training.data import read_json_lines

        return [(f"{path}, line {number}", row) for number, row in read_json_lines(path, "Fix that line.")]
    if kind == "csv":
        import csv

        try:
            with path.open(encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                return [(f"{path}, line {reader.line_num}", dict(row)) for row in reader]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise RecipeError(f"{path} cannot be read as UTF-8 CSV ({exc}). Save it as UTF-8 CSV with a header row.") \
                from None
    from datasets import Dataset

    try:
        rows = Dataset.from_parquet(str(path)).to_list()
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors have no common public base
        raise RecipeError(f"{path} cannot be read as Parquet ({str(exc).splitlines()[0]}).") from None
    return [(f"{path}, row {number}", row) for number, row in enumerate(rows, 1)]


def _rows_of_hub(source: DataSource) -> list[tuple[str, dict]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(source.path, source.name, split=source.split)
    except Exception as exc:  # noqa: BLE001 - the hub, the network and the builders raise many kinds
        raise RecipeError(f"the hub dataset {source.path} (config {source.name}, split {source.split}) cannot be "
                          f"loaded: {str(exc).splitlines()[0]}. Check its id, `name` and `split`.") from None
    return [(f"{source.path} ({source.split}), row {number}", row) for number, row in enumerate(dataset, 1)]


def examples_of_rows(rows: list[tuple[str, dict]], source: DataSource, prompt_format: str) -> list[dict]:
    """Training examples from question/answer rows, each checked like a FiQA record, in ``prompt_format``."""
    from preprocess.prompt_format import build_example
    from recipekit.training.data import record_problem

    question_key, answer_key = source.columns["question"], source.columns["answer"]
    examples = []
    for where, row in rows:
        if isinstance(row, dict) and {"prompt", "completion"} <= set(row) and not {question_key, answer_key} <= set(row):
            problem = record_problem(row)  # already a prompt/completion record
            example = {"prompt": row["prompt"], "completion": row["completion"]}
        else:
            missing = [k for k in (question_key, answer_key) if not isinstance(row, dict) or k not in row]
            if missing:
                columns = ", ".join(map(str, row)) if isinstance(row, dict) else type(row).__name__
                raise RecipeError(f"{where}: no column `{missing[0]}` (the row has: {columns}). Map the question and "
                                  "answer columns with `columns: {question: ..., answer: ...}` in the source's entry.")
            for role, key in (("question", question_key), ("answer", answer_key)):
                value = row[key]
                if not isinstance(value, str):
                    raise RecipeError(f"{where}: the {role} (`{key}`) is "
                                      f"{'empty' if value is None else type(value).__name__ + ', not text'}. "
                                      "Fix or remove that row, or map another column in `columns:`.")
            example = build_example(row[question_key], row[answer_key], prompt_format)
            problem = record_problem(example)
            if problem:
                problem = problem.replace("`prompt`", f"the question (`{question_key}`)").replace(
                    "`completion`", f"the answer (`{answer_key}`)")
        if problem:
            raise RecipeError(f"{where}: {problem}. Fix or remove that row.")
        examples.append({"prompt": example["prompt"], "completion": example["completion"]})
    if not examples:
        raise RecipeError(f"{source.path} holds no rows. Give a file with a header and question/answer rows.")
    return examples


def read_source(source: DataSource, prompt_format: str) -> list[dict]:
    """The training examples of one file or hub source."""
    rows = _rows_of_file(Path(source.path)) if source.kind == "file" else _rows_of_hub(source)
    return examples_of_rows(rows, source, prompt_format)


def records_sha256(records: list[dict]) -> str:
    """A digest of the examples themselves: for a hub source, which has no file to hash."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
    return digest.hexdigest()


# --- mixing ----------------------------------------------------------------------------------------


def rows_wanted(sizes: list[int], weights: list[float | int | None]) -> list[int]:
    """How many rows each source gives the mixture: all of them (no weight), a count, or a share.

    Shares are of the whole mixture: beside sources of fixed size F with shares adding up to S,
    the mixture holds F / (1 - S) rows; when every source has a share, it holds as many rows as
    the sources together.
    """
    fixed = sum(size if w is None else w for size, w in zip(sizes, weights) if not isinstance(w, float))
    shares = sum(w for w in weights if isinstance(w, float))
    total = fixed / (1 - shares) if fixed else sum(sizes)
    return [size if w is None else (w if isinstance(w, int) else max(1, round(w * total)))
            for size, w in zip(sizes, weights)]


def take_rows(dataset, wanted: int, seed: int):
    """``wanted`` rows of ``dataset``: a seeded sample of fewer, every row once per pass and a seeded
    sample of the rest for more."""
    import random

    size = len(dataset)
    order = list(range(size))
    random.Random(seed).shuffle(order)
    indices = order * (wanted // size) + order[: wanted % size]
    return dataset if indices == list(range(size)) else dataset.select(indices)


def mix(datasets: list, weights: list[float | int | None], seed: int):
    """One training set of the sources in their weights (``datasets.concatenate_datasets``; the
    trainer shuffles it), and the rows each gave."""
    from datasets import concatenate_datasets

    wanted = rows_wanted([len(d) for d in datasets], weights)
    parts = [d if w is None else take_rows(d, n, seed + i)
             for i, (d, w, n) in enumerate(zip(datasets, weights, wanted))]
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), wanted
