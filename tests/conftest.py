"""Shared fixtures: everything is built offline, by the project, in temporary folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def fiqa_csv_dir(tmp_path_factory) -> Path:
    """A FiQA copy in the hub layout (train.csv, dev.csv, test.csv) written by preprocess.fixture."""
    from preprocess.fixture import write_fiqa_fixture

    return write_fiqa_fixture(tmp_path_factory.mktemp("fiqa-csv"))


@pytest.fixture(scope="session")
def fiqa_jsonl_dir(tmp_path_factory, fiqa_csv_dir) -> Path:
    """The fixture preprocessed into prompt/completion JSONL."""
    from preprocess.fiqa import preprocess

    out = tmp_path_factory.mktemp("fiqa-jsonl")
    preprocess(out, source_dir=fiqa_csv_dir)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The smoke recipe's tiny Llama and its BPE tokenizer, saved like a hub model."""
    from recipekit.training.smoke_assets import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def train_smoke_in(work: Path, *overrides: str) -> Path:
    """Train the smoke recipe (plus ``overrides``) with its relative paths resolved in ``work``;
    returns the run's output dir."""
    from recipekit.config.parse import parse_recipe
    from recipekit.training.trainer import train

    previous = Path.cwd()
    os.chdir(work)
    try:
        train(parse_recipe([str(REPO_ROOT / "recipes" / "smoke.yaml"), *overrides]))
    finally:
        os.chdir(previous)
    return work / "runs" / "smoke"
