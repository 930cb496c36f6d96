"""``python -m recipes.generate RUN_DIR "question" [...]`` or ``--file questions.txt``.

Answers questions with the base model + the run's adapter, in the prompt format the run
trained on (greedy with a repetition penalty, stopping at EOS). ``--base`` answers with the base model alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from recipekit.cli import run_command
from recipekit.errors import RecipeError
from recipekit.inference.answers import generate_answers
from recipekit.inference.decoding import DEFAULT_MAX_NEW_TOKENS, DEFAULT_REPETITION_PENALTY
from recipekit.inference.trained_run import (
    load_adapter_model,
    load_run_recipe,
    load_run_tokenizer,
    run_prompt_format,
)


def read_questions(args) -> list[str]:
    questions = list(args.questions)
    if args.file:
        from recipekit.runtime.file_checks import control_character, read_text

        text = read_text(args.file, "--file", "Give a UTF-8 text file with one question per line.")
        if bad := control_character(text):
            raise RecipeError(f"--file {args.file} holds the control character {bad}: give plain text, one question "
                              "per line.")
        questions += [line.strip() for line in text.splitlines() if line.strip()]
    if not questions:
        raise RecipeError('no question given. Pass one or more questions, e.g. "What is an ETF?", or --file FILE.')
    return questions


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.generate", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path, help="output_dir of a finished recipes.run run")
    parser.add_argument("questions", nargs="*", help="questions to answer")
    parser.add_argument("--file", type=Path, default=None, help="text file with one question per line")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repetition_penalty", type=float, default=DEFAULT_REPETITION_PENALTY,
                        help="greedy decoding with this repetition penalty (1.0: plain greedy, which loops after "
                        "fine-tuning; bench/README.md)")
    parser.add_argument("--no_repeat_ngram_size", type=int, default=0, help="forbid repeating any n-gram (0: off)")
    parser.add_argument("--base", action="store_true", help="answer with the base model, adapter disabled")
    return parser


def answer_questions(args: argparse.Namespace) -> None:
    questions = read_questions(args)
    recipe = load_run_recipe(args.run_dir)
    prompt_format = run_prompt_format(args.run_dir, recipe)  # before the model loads: a bad file fails in seconds
    tokenizer = load_run_tokenizer(args.run_dir)
    model = load_adapter_model(args.run_dir, recipe)
    source = "the base model alone, adapter disabled" if args.base else "the base model + this run's adapter"
    print(f"Answers of {source} ({recipe.model.model_name_or_path}; {prompt_format} prompt format, greedy, "
          f"repetition penalty {args.repetition_penalty}):\n")
    decoding = dict(repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
    with model.disable_adapter() if args.base else contextlib.nullcontext():
        answers = generate_answers(model, tokenizer, questions, prompt_format, args.max_new_tokens, args.batch_size,
                                   **decoding)
    for question, answer in zip(questions, answers):
        print(f"Question: {question}\nAnswer: {answer.text}\n")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return run_command(lambda: answer_questions(args))


if __name__ == "__main__":
    sys.exit(main())
