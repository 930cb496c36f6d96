"""``accelerate launch -m recipes.run RECIPE.yaml [--key value ...]``: train one adapter.

``python -m recipes.run`` behaves the same on one process; with no recipe it runs
``recipes/smoke.yaml``. ``--plan [--gpu_hour_price X]`` prints what the run would take instead
(``recipekit.planning``). The recipe is checked, and ``--help`` answered, from the key schema
before torch, transformers or TRL is imported (``recipekit.config.parse``, ``recipekit.config.help``);
the training itself is ``recipekit.training.trainer``. Exit status: 0 done, 2 a recipe, data or setup
problem, 3 a non-finite loss, 74 a failed write, 143 / 130 stopped by SIGTERM / SIGINT.
"""

from __future__ import annotations

import sys
from pathlib import Path

from recipekit.cli import run_command
from recipekit.config.help import help_text, wants_help
from recipekit.config.parse import load_recipe_file, parse_recipe
from recipekit.errors import ExitCode
from recipekit.planning import run_plan, take_plan_flags
from recipekit.runtime.signals import (
    STOP,
    StopBeforeTraining,
    die_with_launcher,
    exit_code_for,
    signal_name,
)


def recipe_values_for_help(argv: list[str]) -> dict | None:
    """The recipe's own values, when ``--help`` follows a recipe file."""
    if not argv or argv[0].startswith("-"):
        return None
    return load_recipe_file(Path(argv[0]))


def train_or_answer_help(argv: list[str]) -> int:
    """Answer ``--help``, print a plan (``--plan [--gpu_hour_price X]``), or parse the recipe and train it."""
    asked, everything = wants_help(argv)
    if asked:
        print(help_text(recipe_values_for_help(argv), everything))
        return ExitCode.OK
    plan = take_plan_flags(argv)
    if plan is not None:  # examples, tokens, steps, time, memory, disk: nothing trained or written
        return run_plan(plan)
    recipe = parse_recipe(argv)
    from recipekit.training.trainer import (
        train,  # torch, transformers and TRL: only for a valid recipe
    )

    train(recipe)
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_launcher()
    STOP.install()  # from here, SIGTERM / SIGINT end the run in one line (recipekit.runtime.signals)
    try:
        return run_command(lambda: train_or_answer_help(argv))
    except StopBeforeTraining as stop:  # a signal while the recipe was read or the libraries loaded
        print(f"stopped: {signal_name(stop.signum)} received before training began.", file=sys.stderr)
        return exit_code_for(stop.signum)


if __name__ == "__main__":
    sys.exit(main())
