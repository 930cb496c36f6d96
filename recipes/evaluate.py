"""``python -m recipes.evaluate RUN_DIR [--split test] [--limit N]``: base model vs adapter.

For one split of the run's data, measures both the base model and base + adapter on the
same prompts: loss and perplexity with the training format and masking, then greedy answers
to every question scored against the reference by semantic similarity and ROUGE-L, with the
similarity gain's paired bootstrap 95% interval. Writes ``eval_report.json``,
``eval_report.md``, ``predictions.jsonl`` and ``similarity.png`` into ``RUN_DIR/eval-SPLIT``
(or ``--out``). The work itself is ``recipekit.inference.evaluation``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from recipekit.cli import run_command
from recipekit.errors import RecipeError
from recipekit.inference.decoding import DEFAULT_MAX_NEW_TOKENS, DEFAULT_REPETITION_PENALTY
from recipekit.inference.evaluation import evaluate_run
from recipekit.inference.scoring import DEFAULT_ENCODER


def generation_batch_size_value(text: str) -> int | None:
    """``--generation_batch_size`` as given: ``auto`` (None: sized from free GPU memory) or a whole
    number (checked for being 1 or more with the other counts)."""
    value = str(text).strip()
    if value.lower() == "auto":
        return None
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(f"--generation_batch_size is {text!r}; give a whole number of questions, or auto to fit "
                         "the GPU's free memory.")
    return int(value)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.evaluate", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path, help="output_dir of a finished recipes.run run")
    parser.add_argument("--split", default="test", help="split file of the run's data_dir (default test)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N questions only")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch_size", type=int, default=8, help="examples a forward pass for the loss (default 8)")
    parser.add_argument("--generation_batch_size", default="auto",
                        help="questions answered together (default auto: as many as the GPU's free memory holds, "
                        "128 on a CPU; made smaller while the GPU runs out of memory)")
    parser.add_argument("--repetition_penalty", type=float, default=DEFAULT_REPETITION_PENALTY,
                        help="greedy decoding with this repetition penalty (1.0: plain greedy, which loops after "
                        "fine-tuning; bench/README.md)")
    parser.add_argument("--no_repeat_ngram_size", type=int, default=0, help="forbid repeating any n-gram (0: off)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="sentence-transformers model for similarity")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default RUN_DIR/eval-SPLIT)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return run_command(lambda: evaluate_and_print(args))


def evaluate_and_print(args: argparse.Namespace) -> None:
    try:
        args.generation_batch_size = generation_batch_size_value(args.generation_batch_size)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    for option in ("batch_size", "generation_batch_size", "max_new_tokens"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise RecipeError(f"--{option} is {value}; it counts examples or tokens, so give 1 or more.")
    report = evaluate_run(args.run_dir, args.split, args.limit, args.max_new_tokens, args.batch_size,
                          args.encoder, args.out, args.generation_batch_size,
                          repetition_penalty=args.repetition_penalty,
                          no_repeat_ngram_size=args.no_repeat_ngram_size)
    print((Path(report["out_dir"]) / "eval_report.md").read_text(encoding="utf-8").split("## Examples")[0])
    print(f"report: {report['out_dir']}")


if __name__ == "__main__":
    sys.exit(main())
