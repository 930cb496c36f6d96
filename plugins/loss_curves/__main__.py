"""``python -m plugins.loss_curves RUN_DIR [RUN_DIR ...]``: re-plot or compare runs.

Reads each run's ``metrics.jsonl``, or the ``trainer_state.json`` of any Hugging Face
Trainer run (or of its newest checkpoint). One run: writes its loss, learning-rate and
grad-norm charts. Several runs: also writes ``loss_comparison.png`` overlaying them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.loss_curves.metrics_log import read_run_rows
from plugins.loss_curves.plotting import comparison_figure, render_run_charts
from recipekit.cli import run_command
from recipekit.runtime.atomic_io import atomic_save_figure


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m plugins.loss_curves", description=__doc__.split("\n\n")[1])
    parser.add_argument("runs", nargs="+", type=Path, help="output_dir of one or more training runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default: the run dir, "
                        "or the current directory when comparing several runs)")
    parser.add_argument("--smoothing", type=float, default=None,
                        help="EMA weight of the smoothed loss (default: the run's loss_curves_smoothing from its "
                        "recipe.yaml, else 0.9)")
    return parser


DEFAULT_SMOOTHING = 0.9


def run_smoothing(run_dir: Path) -> float:
    """The smoothing the run drew its own charts with (its resolved recipe), so a re-plot looks the same."""
    import yaml

    recipe = run_dir / "recipe.yaml"
    if recipe.is_file():
        try:
            value = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("loss_curves_smoothing")
        except (yaml.YAMLError, OSError, UnicodeDecodeError, AttributeError, RecursionError):
            value = None  # an unreadable recipe.yaml: draw with the default smoothing
        if isinstance(value, (int, float)):
            return float(value)
    return DEFAULT_SMOOTHING


def run_names(paths: list[Path]) -> list[str]:
    """Short unique labels: the folder names, with parents added where two collide."""
    names = [p.resolve().name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    return names


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    return run_command(lambda: replot(args))


def replot(args: argparse.Namespace) -> None:
    runs = {name: read_run_rows(path) for name, path in zip(run_names(args.runs), args.runs)}
    written = []
    smoothing = [args.smoothing if args.smoothing is not None else run_smoothing(path) for path in args.runs]
    if len(runs) == 1:
        (name, rows), = runs.items()
        written += render_run_charts(rows, args.out or args.runs[0], name, smoothing[0])
    else:
        out = args.out or Path(".")
        for (name, rows), weight in zip(runs.items(), smoothing):
            written += render_run_charts(rows, out / name.replace("/", "_"), name, weight)
        shared = args.smoothing if args.smoothing is not None else DEFAULT_SMOOTHING
        written.append(atomic_save_figure(comparison_figure(runs, shared), out / "loss_comparison.png"))
    for path in written:
        print(path)


if __name__ == "__main__":
    sys.exit(main())
