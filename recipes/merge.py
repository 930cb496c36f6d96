"""``python -m recipes.merge RUN_DIR --out DIR``: fold the adapter into the base weights.

Saves a plain model plus the run's tokenizer, which ``AutoModelForCausalLM.from_pretrained(DIR)``
loads with no PEFT installed, with the chat template and ``generation_config.json`` that make
vLLM, TGI or ``transformers`` ask and stop as ``recipes.evaluate`` did
(``recipekit.inference.merging``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipekit.cli import run_command
from recipekit.inference.merging import merge_run, out_dir_problem

__all__ = ["main", "merge_run", "out_dir_problem"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="output_dir of a finished recipes.run run")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    return run_command(lambda: print(f"merged model saved to {merge_run(args.run_dir, args.out, args.overwrite)}"))


if __name__ == "__main__":
    sys.exit(main())
