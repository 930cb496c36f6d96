"""How much a recipe trains: examples and tokens per epoch, sequences (packs) and optimizer steps.

The data goes through the path training uses (``recipekit.training.trainer.load_datasets``:
the same split files, checks and truncation audit), and each example is tokenized as TRL's
trainer tokenizes it (``recipekit.training.data.token_spans``). TRL then truncates (unpacked)
or packs (``trl.data_utils.pack_dataset``, run here on the token lengths with the recipe's
strategy and ``max_length``), and transformers' Trainer turns sequences into optimizer steps.

When the recipe's tokenizer cannot be loaded (a hub model on a machine without the hub), the
same path runs with :class:`WordCountTokenizer`, which counts words and multiplies them by a
tokens-per-word ratio measured on FiQA with a real tokenizer (``bench/results/tokens_per_word_*.json``):
the tokens, and with packing the packs and steps, are then estimates, and the plan says so.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from recipekit.config.recipe import Recipe
from recipekit.errors import RecipeError
from recipekit.planning.measured import RESULTS_DIR
from recipekit.planning.words import text_pieces, word_count


@dataclass(frozen=True)
class TokensPerWord:
    """A measured ratio and where it comes from."""

    ratio: float
    source: str  # file and what was measured, for the plan's estimate line


@dataclass
class Workload:
    """One epoch of training data and the optimizer steps it makes."""

    examples: int  # training examples after the truncation audit
    left_out: int  # examples the audit left out (no answer token within max_length)
    tokens_per_epoch: int  # tokens the trainer sees in an epoch, after TRL's truncation or packing
    sequences_per_epoch: int  # what a batch holds: packs when packing, else examples
    unit: str  # "packs" or "examples"
    steps_per_epoch: int
    max_steps: int
    world_size: int
    estimate: str | None  # why and how the tokens are estimated; None when the recipe's tokenizer counted them
    tokenizer_bytes: int | None = None  # what the tokenizer's save_pretrained writes into each checkpoint

    @property
    def total_tokens(self) -> float:
        """Tokens over the whole run: an epoch's tokens per step times the steps."""
        return self.tokens_per_epoch * self.max_steps / self.steps_per_epoch

    @property
    def epochs(self) -> float:
        return self.max_steps / self.steps_per_epoch


def world_size() -> int:
    """Processes of the launch, as ``accelerate launch`` / torchrun export them (1 for a plain ``python -m``).

    Read from the environment that the launcher exports to every process, as the run would get it:
    ``accelerate launch --num_processes 4 -m recipes.run R --plan`` plans a 4-process run (each
    process counts, the main one prints).
    """
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def tokens_per_word(chat: bool, results_dir: Path = RESULTS_DIR) -> TokensPerWord | None:
    """The measured tokens-per-word ratio for chat or plain-text records, pooled over every committed
    measurement of that kind (tokens summed over words summed); None when none is committed."""
    kind = "chat" if chat else "text"
    tokens = words = 0
    files = []
    for path in sorted(results_dir.glob("tokens_per_word_*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows = [r for r in report.get("results", []) if r.get("kind") == kind and r.get("words")]
        if rows:
            tokens += sum(r["tokens"] for r in rows)
            words += sum(r["words"] for r in rows)
            name = report.get("tokenizer", {}).get("name", "a tokenizer")
            files.append(f"bench/results/{path.name} ({name.split(':')[0]}, {sum(r['examples'] for r in rows)} "
                         f"{kind} examples, {report.get('date', 'undated')})")
    if not words:
        return None
    return TokensPerWord(tokens / words, "; ".join(files))


class WordCountTokenizer:
    """Stands in for a tokenizer that cannot be loaded: each text is ``round(words x ratio)`` tokens.

    It offers what the data path calls (``__call__``, ``apply_chat_template``, ``eos_token``), so the
    split files, their checks and the truncation audit run exactly as in training; only the counts are
    estimates. The ids are all 0: only lengths matter, and a prompt's ids stay a prefix of the
    prompt + completion ids, as the audit expects. Chat-template and special tokens are not counted.
    """

    def __init__(self, ratio: float, eos_token: str) -> None:
        self.ratio = ratio
        self.eos_token = eos_token

    def _ids(self, texts: list[str]) -> list[int]:
        return [0] * round(self.ratio * sum(word_count(t) for t in texts))

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": self._ids([text])}

    def apply_chat_template(self, messages: list[dict], tokenize: bool = True, **_: object) -> list[int]:
        return self._ids(text_pieces(messages))


# How recipekit.training.model words a tokenizer it cannot fetch (loading_error, check_hub_reachable):
# only then does the plan estimate; any other refusal of the tokenizer is the recipe's to fix.
UNREACHABLE = ("could not load", "the Hugging Face hub")


def planning_tokenizer(recipe: Recipe, first_record_is_chat: bool) -> tuple[object, str | None]:
    """The recipe's tokenizer, or a :class:`WordCountTokenizer` and the sentence that says why and how."""
    from recipekit.training.model import load_tokenizer

    try:
        return load_tokenizer(recipe.model, recipe.training), None
    except RecipeError as exc:
        if not str(exc).startswith(UNREACHABLE):
            raise  # the tokenizer loaded and the recipe is wrong about it (a pad_token it lacks): a run would stop too
        reason = str(exc).split(". ")[0]
    measured = tokens_per_word(first_record_is_chat)
    if measured is None:
        raise RecipeError(
            f"the tokenizer of {recipe.model.model_name_or_path} cannot be loaded here ({reason}), and no "
            "tokens-per-word measurement is committed in bench/results to estimate from. Run the plan where the "
            "tokenizer can be loaded (the hub, or a local copy of the model folder as model_name_or_path)."
        )
    eos = recipe.training.eos_token or "</s>"
    note = (f"ESTIMATE, not tokenized: {reason}. Tokens are the data's words x {measured.ratio:.3f} tokens/word, the "
            f"ratio measured in {measured.source}; chat-template and special tokens are not counted")
    return WordCountTokenizer(measured.ratio, eos), note


def first_record_is_chat(recipe: Recipe) -> bool:
    """Whether the training split holds chat messages (for which ratio to assume); False when unreadable."""
    from recipekit.training.data import split_path

    try:
        with split_path(recipe.recipe.data_dir, recipe.recipe.train_split).open(encoding="utf-8") as handle:
            return isinstance(json.loads(handle.readline()).get("prompt"), list)
    except (OSError, ValueError, AttributeError):
        return False  # the data path itself reports what is wrong with the file


def sequence_lengths(lengths: list[int], args) -> list[int]:
    """Token lengths of what the trainer batches: TRL's packs, or its truncated examples."""
    if args.packing:
        import datasets
        from trl.data_utils import pack_dataset

        shown = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a plan prints its lines, not a "Map" bar of an in-memory table
        try:
            packed = pack_dataset(datasets.Dataset.from_dict({"input_ids": [[0] * n for n in lengths]}),
                                  args.max_length, args.packing_strategy)
        finally:
            if shown:
                datasets.enable_progress_bars()
        return [len(ids) for ids in packed["input_ids"]]
    if args.max_length is not None:
        return [min(n, args.max_length) for n in lengths]
    return list(lengths)


def optimizer_steps(sequences: int, args, world: int) -> tuple[int, int]:
    """(steps per epoch, total steps) as transformers' Trainer counts them.

    Batches of ``per_device_train_batch_size`` (the last one partial unless ``dataloader_drop_last``),
    dealt round the processes by accelerate (even batches: a partial round still counts), then
    ``gradient_accumulation_steps`` batches an optimizer step, at least one; ``max_steps`` > 0 wins
    over epochs (``Trainer.set_initial_training_values``).
    """
    drop_last = args.dataloader_drop_last
    per_device = args.per_device_train_batch_size
    batches = sequences // per_device if drop_last else math.ceil(sequences / per_device)
    per_process = batches // world if drop_last else math.ceil(batches / world)
    per_epoch = max(math.ceil(per_process / args.gradient_accumulation_steps), 1)
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    return per_epoch, total


def saved_tokenizer_bytes(tokenizer) -> int | None:
    """Bytes the Trainer writes for the tokenizer into every checkpoint, measured by saving it to a
    temporary folder (never output_dir); None for the word-count stand-in."""
    import tempfile

    if isinstance(tokenizer, WordCountTokenizer):
        return None
    with tempfile.TemporaryDirectory(prefix="plan-tokenizer-") as folder:
        tokenizer.save_pretrained(folder)
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def plan_workload(recipe: Recipe) -> Workload:
    """The recipe's training data counted as the trainer will see it (estimated when it must be, and said)."""
    from recipekit.training.data import token_spans
    from recipekit.training.trainer import load_datasets

    args = recipe.training
    tokenizer, estimate = planning_tokenizer(recipe, first_record_is_chat(recipe))
    datasets, reports = load_datasets(recipe, tokenizer)
    train = datasets["train"]
    lengths = [total for _, total in token_spans(train, tokenizer, args.eos_token)]
    sequences = sequence_lengths(lengths, args)
    world = world_size()
    per_epoch, total = optimizer_steps(len(sequences), args, world)
    return Workload(
        examples=len(train), left_out=reports[0].left_out, tokens_per_epoch=sum(sequences),
        sequences_per_epoch=len(sequences), unit="packs" if args.packing else "examples",
        steps_per_epoch=per_epoch, max_steps=total, world_size=world, estimate=estimate,
        tokenizer_bytes=saved_tokenizer_bytes(tokenizer),
    )
